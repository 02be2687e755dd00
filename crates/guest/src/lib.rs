//! ec1-guest
