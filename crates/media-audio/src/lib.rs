//! # media-audio (skeleton)
//!
//! Audio input and output behind an `AudioBackend` trait: cpal devices, WAV
//! file source and sink, and a null device paced by a real clock, connected to
//! media through lock-free single-producer single-consumer rings. The device
//! callback will never allocate, lock or block.
//!
//! **Status:** not implemented yet; this crate exports nothing.
