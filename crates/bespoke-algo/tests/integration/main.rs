//! Integration tests of bespoke-algo: whole algorithms on generated worlds. One binary, split
//! into topic modules, for link time.

mod debias;
mod experiments;
