//! The cart-store node (placeholder until the cart-store issue lands).
#![deny(missing_docs)]
