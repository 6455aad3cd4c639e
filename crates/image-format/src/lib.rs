//! image-format
