//! One module per subcommand: parse → plan → library call.

pub mod convert;
pub mod demo;
pub mod device;
pub mod info;
pub mod memorization;
pub mod protocol;
pub mod recon;
pub mod simulate;
pub mod train;
pub(crate) mod volumes;
