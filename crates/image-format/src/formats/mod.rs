//! One module per disk format: each reads its header through a bounded
//! [`Source`](crate::source::Source) and knows the rules an upload of that
//! format must pass.

pub(crate) mod iso;
pub(crate) mod partition_table;
pub(crate) mod ploop;
pub(crate) mod qcow2;
pub(crate) mod vdi;
pub(crate) mod vhd;
pub(crate) mod vhdx;
pub(crate) mod vmdk;
pub(crate) mod vmdk_descriptor;
