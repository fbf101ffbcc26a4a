//! The `mimeo` command; see `mimeo --help`.

fn main() -> std::process::ExitCode {
    mimeo_node::cli::main()
}

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
