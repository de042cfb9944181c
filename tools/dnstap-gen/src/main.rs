//! `dnstap-gen PROTO OUT_DIR`: write the prost types of PROTO to
//! OUT_DIR/dnstap.rs.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args_os().skip(1);
    let (Some(proto), Some(out)) = (args.next(), args.next()) else {
        return Err("usage: dnstap-gen PROTO OUT_DIR".into());
    };
    let proto = PathBuf::from(proto);
    let include = proto
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    let fds = protox::compile([&proto], [&include])?;
    prost_build::Config::new()
        .out_dir(PathBuf::from(out))
        .compile_fds(fds)?;
    Ok(())
}
