//! The fetch pipeline without gRPC: one URL from address to letterboxed image — address
//! policy and resolver, per-host politeness, bounded download, memory budget, and the decode
//! pool (JPEG via libjpeg-turbo, WebP via libwebp, the rest via `image`). The fetcher service
//! leases and detects around it; `facesweep bench` and `facesweep sheet` use it alone.

mod budget;
mod canvas;
pub mod decode;
pub mod download;
mod exif;
pub mod fetch;
mod jpeghead;
mod jpegscan;
pub mod net;
pub mod outcome;
mod planescale;
mod png;
mod pool;
mod webp;
mod yuv;
