//! The `facesweep` command line's tests, as modules of one test binary (one link of LibTorch);
//! each runs the real binary (`CARGO_BIN_EXE_facesweep`) as a child process.

mod cli;
mod harness;
mod inputs;
mod interrupt;
mod sheet;
mod terminal;
mod ux;
