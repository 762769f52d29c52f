//! # provisioning (skeleton)
//!
//! Fetches the provisioning document over HTTPS (certificates verified; HTTP
//! Basic and Digest authentication; bounded redirects and size; ETag caching),
//! validates it with `config-export` and applies it atomically.
//!
//! **Status:** not implemented yet; this crate exports nothing.
