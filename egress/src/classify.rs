//! What kind of address an IP is, after normalising the forms that hide an IPv4 address inside
//! an IPv6 one. Pure functions over `std::net`; no policy decisions and no I/O here.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What an address is, as far as the outbound policy cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Routable on the internet.
    Public,
    /// A private, carrier-grade NAT or otherwise site-local network (10/8, 172.16/12,
    /// 192.168/16, 100.64/10, 198.18/15, fc00::/7, fec0::/10).
    Private,
    /// This host (127/8, ::1).
    Loopback,
    /// Never a destination, whoever set the URL.
    Forbidden(Forbidden),
}

/// Addresses the router never connects to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forbidden {
    /// A cloud instance-metadata or host-platform endpoint (169.254.169.254, fd00:ec2::254,
    /// 100.100.100.200, 168.63.129.16): reaching it can hand out the machine's cloud credentials.
    Metadata,
    /// Link-local (169.254/16, fe80::/10).
    LinkLocal,
    /// Unspecified / "this network" (0.0.0.0/8, ::): Linux connects 0.0.0.0 to this host, so it
    /// is a loopback address in disguise.
    Unspecified,
    /// Multicast (224/4, ff00::/8).
    Multicast,
    /// The limited broadcast address 255.255.255.255.
    Broadcast,
    /// Reserved, documentation or protocol-assignment ranges that no upstream lives on
    /// (240/4, 192.0.0/24, 192.0.2/24, 198.51.100/24, 203.0.113/24, 2001:db8::/32, 100::/64,
    /// Teredo 2001::/32).
    Reserved,
}

impl Forbidden {
    /// A few words for messages: "a cloud metadata address".
    pub fn describe(self) -> &'static str {
        match self {
            Forbidden::Metadata => "a cloud metadata address",
            Forbidden::LinkLocal => "a link-local address",
            Forbidden::Unspecified => "an unspecified (0.0.0.0 / ::) address",
            Forbidden::Multicast => "a multicast address",
            Forbidden::Broadcast => "the broadcast address",
            Forbidden::Reserved => "a reserved address",
        }
    }
}

/// The address the packets really go to: an IPv4 address written as IPv6 (IPv4-mapped
/// `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`) becomes that IPv4
/// address, so `[::ffff:169.254.169.254]` is judged as 169.254.169.254. `::` and `::1` stay as
/// they are (they are not IPv4-compatible addresses, whatever `Ipv6Addr::to_ipv4` says).
pub fn normalise(ip: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = ip else { return ip };
    if let Some(v4) = v6.to_ipv4_mapped() {
        return IpAddr::V4(v4);
    }
    let o = v6.octets();
    let compatible = o[..12] == [0; 12] && !v6.is_unspecified() && !v6.is_loopback();
    let nat64 = o[..12] == [0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0];
    if compatible || nat64 { IpAddr::V4(Ipv4Addr::new(o[12], o[13], o[14], o[15])) } else { ip }
}

/// Classifies `ip` after [`normalise`].
pub fn classify(ip: IpAddr) -> Class {
    match normalise(ip) {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn in_v6(ip: Ipv6Addr, net: [u16; 8], prefix: u32) -> bool {
    let mask = if prefix == 0 { 0 } else { u128::MAX << (128 - prefix) };
    u128::from(ip) & mask == u128::from(Ipv6Addr::from(net)) & mask
}

/// Well-known instance-metadata and host-platform endpoints: AWS, GCP, Azure, OpenStack and
/// Oracle share 169.254.169.254 (inside link-local anyway, named for the message); Alibaba Cloud
/// uses 100.100.100.200 (inside carrier-grade NAT, which admins may otherwise reach); Azure's
/// WireServer is 168.63.129.16 (a public-looking address).
const METADATA_V4: [Ipv4Addr; 3] =
    [Ipv4Addr::new(169, 254, 169, 254), Ipv4Addr::new(100, 100, 100, 200), Ipv4Addr::new(168, 63, 129, 16)];

/// AWS's IPv6 metadata endpoint.
const METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254);

fn classify_v4(ip: Ipv4Addr) -> Class {
    use Forbidden::*;
    if METADATA_V4.contains(&ip) {
        return Class::Forbidden(Metadata);
    }
    let forbidden: &[([u8; 4], u32, Forbidden)] = &[
        ([0, 0, 0, 0], 8, Unspecified),
        ([169, 254, 0, 0], 16, LinkLocal),
        ([255, 255, 255, 255], 32, Broadcast),
        ([224, 0, 0, 0], 4, Multicast),
        ([240, 0, 0, 0], 4, Reserved),
        ([192, 0, 0, 0], 24, Reserved),
        ([192, 0, 2, 0], 24, Reserved),
        ([198, 51, 100, 0], 24, Reserved),
        ([203, 0, 113, 0], 24, Reserved),
    ];
    if let Some((_, _, why)) = forbidden.iter().find(|(net, p, _)| in_v4(ip, *net, *p)) {
        return Class::Forbidden(*why);
    }
    if in_v4(ip, [127, 0, 0, 0], 8) {
        return Class::Loopback;
    }
    let private: &[([u8; 4], u32)] = &[
        ([10, 0, 0, 0], 8),
        ([172, 16, 0, 0], 12),
        ([192, 168, 0, 0], 16),
        ([100, 64, 0, 0], 10),
        ([198, 18, 0, 0], 15),
    ];
    if private.iter().any(|(net, p)| in_v4(ip, *net, *p)) {
        return Class::Private;
    }
    Class::Public
}

fn classify_v6(ip: Ipv6Addr) -> Class {
    use Forbidden::*;
    if ip == METADATA_V6 {
        return Class::Forbidden(Metadata);
    }
    if ip.is_unspecified() {
        return Class::Forbidden(Unspecified);
    }
    if ip.is_loopback() {
        return Class::Loopback;
    }
    // 6to4 carries an IPv4 address in bits 16..48: judge that one.
    if in_v6(ip, [0x2002, 0, 0, 0, 0, 0, 0, 0], 16) {
        let o = ip.octets();
        let v4 = Ipv4Addr::new(o[2], o[3], o[4], o[5]);
        return match classify_v4(v4) {
            Class::Public => Class::Public,
            _ => Class::Forbidden(Reserved),
        };
    }
    let forbidden: &[([u16; 8], u32, Forbidden)] = &[
        ([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10, LinkLocal),
        ([0xff00, 0, 0, 0, 0, 0, 0, 0], 8, Multicast),
        ([0x2001, 0x0db8, 0, 0, 0, 0, 0, 0], 32, Reserved),
        ([0x0100, 0, 0, 0, 0, 0, 0, 0], 64, Reserved),
        ([0x2001, 0, 0, 0, 0, 0, 0, 0], 32, Reserved),
    ];
    if let Some((_, _, why)) = forbidden.iter().find(|(net, p, _)| in_v6(ip, *net, *p)) {
        return Class::Forbidden(*why);
    }
    let private: &[([u16; 8], u32)] = &[
        ([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7),
        ([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10),
        ([0x0064, 0xff9b, 0x0001, 0, 0, 0, 0, 0], 48),
    ];
    if private.iter().any(|(net, p)| in_v6(ip, *net, *p)) {
        return Class::Private;
    }
    Class::Public
}
