//! Integration tests of the shoal facade, in one test binary.

mod it;
