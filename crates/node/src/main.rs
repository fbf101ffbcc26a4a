//! The `mimeo` command; see `mimeo --help`.

fn main() -> std::process::ExitCode {
    mimeo_node::cli::main()
}

/// mimalloc: under load glibc's malloc cost the leader 4% of its CPU.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
