//! Node identifiers.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The identity of a replica: the id it has in the cluster's configuration,
/// such as `"n1"`.
///
/// Every clock and merge type in this crate names its actors with a
/// `NodeId`. Ids are compared as strings (byte-wise), which gives the
/// tie-break of the [`Timestamp`](crate::Timestamp) order and the
/// iteration order of every map, so encodings are deterministic.
///
/// **One id, one replica.** Dots are `(node, counter)` pairs that must be
/// unique, so a node id must never be used by two live replicas at once,
/// and a replica that lost its state must not reuse its old id (it would
/// mint dots that already exist, with other values).
///
/// It serializes as a plain string. Clones share the string (it is
/// reference-counted), so copying ids into clocks and dots does not
/// allocate.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(Arc<str>);

impl NodeId {
    /// A node id from its configured name.
    pub fn new(id: impl AsRef<str>) -> Self {
        Self(Arc::from(id.as_ref()))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for NodeId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for NodeId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(NodeId::from)
    }
}

impl From<&str> for NodeId {
    fn from(id: &str) -> Self {
        Self(Arc::from(id))
    }
}

impl From<String> for NodeId {
    fn from(id: String) -> Self {
        Self(Arc::from(id))
    }
}

impl From<&NodeId> for NodeId {
    fn from(id: &NodeId) -> Self {
        id.clone()
    }
}

impl Borrow<str> for NodeId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for NodeId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}
