//! ec1-api
