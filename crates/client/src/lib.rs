//! ec1-client
