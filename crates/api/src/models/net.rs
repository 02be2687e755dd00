use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::RateLimiterConfig;

/// A guest MAC address, written `aa:bb:cc:dd:ee:ff` as Firecracker does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MacAddr(pub [u8; 6]);

impl FromStr for MacAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!("invalid MAC address `{s}`: expected six colon-separated hex bytes such as 06:00:AC:10:00:02")
        };
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 6 {
            return Err(bad());
        }
        let mut out = [0u8; 6];
        for (o, p) in out.iter_mut().zip(parts) {
            if p.len() != 2 {
                return Err(bad());
            }
            *o = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        Ok(MacAddr(out))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl Serialize for MacAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Body of `PUT /network-interfaces/{iface_id}` (`NetworkInterface`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkInterfaceConfig {
    pub iface_id: String,
    pub host_dev_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_mac: Option<MacAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx_rate_limiter: Option<RateLimiterConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_rate_limiter: Option<RateLimiterConfig>,
}

/// Body of `PATCH /network-interfaces/{iface_id}` (`PartialNetworkInterface`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkInterfaceUpdateConfig {
    pub iface_id: String,
    #[serde(default)]
    pub rx_rate_limiter: Option<RateLimiterConfig>,
    #[serde(default)]
    pub tx_rate_limiter: Option<RateLimiterConfig>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_addresses_parse_and_print() {
        let m: MacAddr = "06:00:AC:10:00:02".parse().unwrap();
        assert_eq!(m.0, [6, 0, 0xac, 0x10, 0, 2]);
        assert_eq!(m.to_string(), "06:00:ac:10:00:02");
        for bad in [
            "",
            "06:00:AC:10:00",
            "06:00:AC:10:00:02:03",
            "0g:00:00:00:00:00",
            "6:00:00:00:00:000",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
        let err = serde_json::from_str::<MacAddr>("\"zz\"").unwrap_err();
        assert!(err.to_string().contains("invalid MAC address `zz`"));
        assert_eq!(serde_json::to_string(&m).unwrap(), "\"06:00:ac:10:00:02\"");
    }
}
