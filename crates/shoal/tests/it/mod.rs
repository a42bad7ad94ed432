mod delayed;
mod errors;
mod futures;
mod props;
mod support;
