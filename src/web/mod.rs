pub(crate) mod origin;
pub(crate) mod tls;
