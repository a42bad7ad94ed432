mod delayed;
mod errors;
mod futures;
mod props;
mod remote;
mod support;
