//! Who may query: a list of allowed prefixes; everyone else gets REFUSED
//! (with EDE 18). Lists are short in practice, so a linear scan over
//! pre-split v4/v6 prefixes beats a trie.

use std::net::IpAddr;

use ipnet::IpNet;

#[derive(Clone, Debug, Default)]
pub(crate) struct Acl {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

fn mask32(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - len as u32)
    }
}

fn mask128(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - len as u32)
    }
}

impl Acl {
    pub(crate) fn new(allow: &[IpNet]) -> Acl {
        let mut acl = Acl::default();
        for net in allow {
            match net {
                IpNet::V4(n) => {
                    let m = mask32(n.prefix_len());
                    acl.v4.push((u32::from(n.network()) & m, m));
                }
                IpNet::V6(n) => {
                    let m = mask128(n.prefix_len());
                    acl.v6.push((u128::from(n.network()) & m, m));
                }
            }
        }
        acl
    }

    pub(crate) fn allows(&self, ip: IpAddr) -> bool {
        // A v4 client on a dual-stack socket shows up as ::ffff:a.b.c.d.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match ip {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                self.v4.iter().any(|&(net, m)| a & m == net)
            }
            IpAddr::V6(a) => {
                let a = u128::from(a);
                self.v6.iter().any(|&(net, m)| a & m == net)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(nets: &[&str]) -> Acl {
        Acl::new(
            &nets
                .iter()
                .map(|s| s.parse().unwrap())
                .collect::<Vec<IpNet>>(),
        )
    }

    #[test]
    fn prefix_matching() {
        let a = acl(&["127.0.0.1/32", "10.0.0.0/8", "2001:db8::/32"]);
        for (ip, ok) in [
            ("127.0.0.1", true),
            ("127.0.0.2", false),
            ("10.255.0.1", true),
            ("11.0.0.1", false),
            ("2001:db8:1::5", true),
            ("2001:db9::1", false),
            ("::1", false),
            ("::ffff:127.0.0.1", true),
            ("::ffff:127.0.0.2", false),
        ] {
            assert_eq!(a.allows(ip.parse().unwrap()), ok, "{ip}");
        }
    }

    #[test]
    fn default_is_loopback_only() {
        let cfg = crate::config::Config::from_toml_str_with_resolv_text(
            "",
            "t",
            "nameserver 192.0.2.53\n",
        )
        .expect("the default configuration");
        let a = Acl::new(&cfg.acl);
        assert!(a.allows("127.0.0.1".parse().unwrap()));
        assert!(a.allows("127.9.9.9".parse().unwrap()));
        assert!(a.allows("::1".parse().unwrap()));
        assert!(!a.allows("192.168.1.1".parse().unwrap()));
        assert!(!a.allows("::2".parse().unwrap()));
    }

    #[test]
    fn any_and_empty() {
        assert!(acl(&["0.0.0.0/0"]).allows("8.8.8.8".parse().unwrap()));
        assert!(!acl(&["0.0.0.0/0"]).allows("2001::1".parse().unwrap()));
        assert!(!acl(&[]).allows("127.0.0.1".parse().unwrap()));
    }
}
