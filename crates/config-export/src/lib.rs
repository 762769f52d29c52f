//! # config-export (skeleton)
//!
//! The typed configuration and its versioned XML document: the same schema
//! serves provisioning files and exports. Round trips are lossless (unknown
//! elements survive), exports are encrypted unless plaintext is asked for, and a
//! redacted export replaces every secret.
//!
//! **Status:** not implemented yet; this crate exports nothing.
