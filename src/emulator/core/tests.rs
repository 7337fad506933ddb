//! Unit tests of the emulator core.
use super::*;
