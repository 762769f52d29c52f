//! # contacts (skeleton)
//!
//! The contact model, a SQLite store with full-text search as you type, E.164
//! number normalisation and caller lookup, and sources that sync into it:
//! local, LDAP/LDAPS, Google People and Exchange (Microsoft Graph).
//!
//! **Status:** not implemented yet; this crate exports nothing.
