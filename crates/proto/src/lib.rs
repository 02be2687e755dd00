//! ec1-proto
