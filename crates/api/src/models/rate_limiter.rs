use serde::{Deserialize, Serialize};

/// A token bucket (`TokenBucket`): `size` tokens refilled over `refill_time` ms, plus an
/// initial burst. Firecracker treats a bucket with `size` or `refill_time` 0 as "no limit".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenBucketConfig {
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub one_time_burst: Option<u64>,
    pub refill_time: u64,
}

/// A rate limiter (`RateLimiter`): independent bandwidth and operations buckets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimiterConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<TokenBucketConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ops: Option<TokenBucketConfig>,
}

impl TokenBucketConfig {
    /// The engine's bucket, or `None` where Firecracker would not limit at all.
    pub fn to_engine(self) -> Option<ec1_engine::TokenBucket> {
        if self.size == 0 || self.refill_time == 0 {
            return None;
        }
        Some(ec1_engine::TokenBucket {
            size: self.size,
            one_time_burst: self.one_time_burst.unwrap_or(0),
            refill_time_ms: self.refill_time,
        })
    }
}

impl RateLimiterConfig {
    /// The engine's rate limit, or `None` when neither bucket limits anything.
    pub fn to_engine(self) -> Option<ec1_engine::RateLimit> {
        let bandwidth = self.bandwidth.and_then(TokenBucketConfig::to_engine);
        let ops = self.ops.and_then(TokenBucketConfig::to_engine);
        if bandwidth.is_none() && ops.is_none() {
            None
        } else {
            Some(ec1_engine::RateLimit { bandwidth, ops })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_buckets_mean_no_limit() {
        let rl: RateLimiterConfig = serde_json::from_str(
            r#"{"bandwidth":{"size":0,"refill_time":100},"ops":{"size":10,"refill_time":0}}"#,
        )
        .unwrap();
        assert_eq!(rl.to_engine(), None);
        let rl: RateLimiterConfig = serde_json::from_str(
            r#"{"bandwidth":{"size":1000,"one_time_burst":5,"refill_time":100}}"#,
        )
        .unwrap();
        assert_eq!(
            rl.to_engine(),
            Some(ec1_engine::RateLimit {
                bandwidth: Some(ec1_engine::TokenBucket {
                    size: 1000,
                    one_time_burst: 5,
                    refill_time_ms: 100
                }),
                ops: None
            })
        );
    }

    #[test]
    fn missing_fields_are_refused_and_unknown_ones_only_in_the_limiter() {
        assert!(serde_json::from_str::<TokenBucketConfig>(r#"{"size":1}"#).is_err());
        // As Firecracker's `TokenBucketConfig`, which has no `deny_unknown_fields`.
        assert!(
            serde_json::from_str::<TokenBucketConfig>(r#"{"size":1,"refill_time":1,"x":1}"#)
                .is_ok()
        );
        assert!(serde_json::from_str::<RateLimiterConfig>(r#"{"bw":{}}"#).is_err());
    }
}
