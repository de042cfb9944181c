//! The TLS front (`[web] tls_listen`).

mod hello;

pub(crate) use hello::{HelloRead, MAX_HELLO_BYTES, NotTls, parse_client_hello};
