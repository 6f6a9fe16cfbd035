//! Local stand-in for `spin up`.
