//! The wire formats of an image (see `PixelFormat` in detector.proto) and how each becomes the
//! model's canvas on the device: validation here, assembly (YUV → RGB, padding) as tensor ops
//! so that padding and chroma never cross the wire or the PCIe bus.

use bytes::Bytes;
use facesweep_proto::{DetectRequest, PixelFormat};
use tch::{Device, Kind, Tensor};

/// Formats this detector accepts, announced in ModelInfo, preferred first. On a GPU the
/// compact wire: ~3x fewer bytes and its conversion is nothing there. On CPU the whole RGB
/// canvas: a CPU detector is bound by the network's compute, not by bytes, and converting
/// on the CPU cost 18-40% of its images/s (docs/benchmarks.md, gpu-check on CPU).
pub fn pixel_formats(device: Device) -> Vec<PixelFormat> {
    if device.is_cuda() {
        vec![PixelFormat::I420, PixelFormat::RgbUnspecified]
    } else {
        vec![PixelFormat::RgbUnspecified, PixelFormat::I420]
    }
}

/// One image as received, checked, with how to map boxes back to the original.
#[derive(Clone, Debug)]
pub struct ImageInput {
    pub data: Bytes,
    pub format: PixelFormat,
    /// Size of `data`'s picture.
    pub height: u32,
    pub width: u32,
    /// The model canvas it is padded into, and where its top-left corner lands.
    pub canvas: (u32, u32),
    pub place: (u32, u32),
    pub scale: f32,
    pub offset_x: f32,
    pub offset_y: f32,
    pub original_width: u32,
    pub original_height: u32,
}

impl ImageInput {
    /// A whole RGB canvas, boxes in its own pixels (warm-up, benchmarks).
    pub fn rgb_canvas(data: Bytes, width: u32, height: u32) -> Self {
        ImageInput {
            data,
            format: PixelFormat::RgbUnspecified,
            height,
            width,
            canvas: (width, height),
            place: (0, 0),
            scale: 1.0,
            offset_x: 0.0,
            offset_y: 0.0,
            original_width: width,
            original_height: height,
        }
    }

    /// Images batch together when their canvases have the same (height, width).
    pub fn shape(&self) -> (u32, u32) {
        (self.canvas.1, self.canvas.0)
    }
}

/// Bytes a `w`×`h` picture has in `format`; `None` when that does not fit a `usize`. The
/// sizes come from the request, so no product may overflow: (2^32-1)^2 * 3 exceeds u64.
pub fn expected_len(format: PixelFormat, w: u32, h: u32) -> Option<usize> {
    let (w, h) = (usize::try_from(w).ok()?, usize::try_from(h).ok()?);
    let pixels = w.checked_mul(h)?;
    match format {
        PixelFormat::RgbUnspecified => pixels.checked_mul(3),
        PixelFormat::I420 => w.div_ceil(2).checked_mul(h.div_ceil(2))?.checked_mul(2)?.checked_add(pixels),
    }
}

/// Why a request is not an image this detector can take; each message is the client's fix.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidImage {
    #[error("pixel format {0} is not one this detector understands")]
    Format(i32),
    #[error("channels must be 3 (colour), got {0}")]
    Channels(u32),
    #[error("the canvas must be in 1..={}x{} (the model's input), got {}x{}", .max.0, .max.1, .got.0, .got.1)]
    Canvas { max: (u32, u32), got: (u32, u32) },
    #[error("the image must be in 1..={}x{} (its canvas), got {}x{}", .canvas.0, .canvas.1, .got.0, .got.1)]
    Size { canvas: (u32, u32), got: (u32, u32) },
    #[error("a {}x{} {format:?} image is too large", .size.0, .size.1)]
    TooLarge { format: PixelFormat, size: (u32, u32) },
    #[error("data has {got} bytes, a {}x{} {format:?} image has {expected}", .size.0, .size.1)]
    DataLength { got: usize, expected: usize, format: PixelFormat, size: (u32, u32) },
    #[error("scale must be a positive number and offsets finite")]
    Scale,
    #[error("offsets of padded content must be whole, non-negative pixels")]
    Offsets,
    #[error("{}x{} content at ({}, {}) does not fit the {}x{} canvas", .size.0, .size.1, .at.0, .at.1, .canvas.0, .canvas.1)]
    Outside { size: (u32, u32), at: (u32, u32), canvas: (u32, u32) },
}

/// Checks a request describes a real image that fits the model's input (`max` = width,
/// height).
pub fn validate(r: &DetectRequest, max: (u32, u32)) -> Result<ImageInput, InvalidImage> {
    let format = PixelFormat::try_from(r.format).map_err(|_| InvalidImage::Format(r.format))?;
    if r.channels != 3 {
        return Err(InvalidImage::Channels(r.channels));
    }
    let padded = r.canvas_width != 0 || r.canvas_height != 0;
    let canvas = if padded { (r.canvas_width, r.canvas_height) } else { (r.width, r.height) };
    if canvas.0 == 0 || canvas.1 == 0 || canvas.0 > max.0 || canvas.1 > max.1 {
        return Err(InvalidImage::Canvas { max, got: canvas });
    }
    // Content larger than its canvas is refused before any size is computed from it.
    let size = (r.width, r.height);
    if r.width == 0 || r.height == 0 || r.width > canvas.0 || r.height > canvas.1 {
        return Err(InvalidImage::Size { canvas, got: size });
    }
    let expected = expected_len(format, r.width, r.height).ok_or(InvalidImage::TooLarge { format, size })?;
    if r.data.len() != expected {
        return Err(InvalidImage::DataLength { got: r.data.len(), expected, format, size });
    }
    if !(r.scale.is_finite() && r.scale > 0.0 && r.offset_x.is_finite() && r.offset_y.is_finite()) {
        return Err(InvalidImage::Scale);
    }
    let place = if padded { placement(r, canvas)? } else { (0, 0) };
    let (ow, oh) = if r.original_width == 0 || r.original_height == 0 {
        (r.width, r.height)
    } else {
        (r.original_width, r.original_height)
    };
    Ok(ImageInput {
        data: r.data.clone(),
        format,
        height: r.height,
        width: r.width,
        canvas,
        place,
        scale: r.scale,
        offset_x: r.offset_x,
        offset_y: r.offset_y,
        original_width: ow,
        original_height: oh,
    })
}

/// Content padded on the device lands at whole pixels, inside the canvas.
fn placement(r: &DetectRequest, canvas: (u32, u32)) -> Result<(u32, u32), InvalidImage> {
    let whole = |v: f32| v >= 0.0 && v.fract() == 0.0;
    if !whole(r.offset_x) || !whole(r.offset_y) {
        return Err(InvalidImage::Offsets);
    }
    let (x, y) = (r.offset_x as u32, r.offset_y as u32);
    if x as u64 + r.width as u64 > canvas.0 as u64 || y as u64 + r.height as u64 > canvas.1 as u64 {
        return Err(InvalidImage::Outside { size: (r.width, r.height), at: (x, y), canvas });
    }
    Ok((x, y))
}

/// The batch as one float NCHW RGB tensor in 0..=255 on `device`: one host→device copy of
/// every image's bytes as sent, then conversion and padding there.
pub fn assemble(images: &[&ImageInput], device: Device) -> Tensor {
    let lens: Vec<i64> = images.iter().map(|i| i.data.len() as i64).collect();
    let mut host = Vec::with_capacity(lens.iter().sum::<i64>() as usize);
    for img in images {
        host.extend_from_slice(&img.data);
    }
    // Stay u8 until on the device: 4x less to copy than float.
    let flat = Tensor::from_slice(&host);
    let flat = if device.is_cuda() {
        // Pinned staging lets the copy run asynchronously (DMA) with the host free.
        flat.pin_memory(device).to_device_(device, Kind::Uint8, true, false)
    } else {
        flat
    };
    let (ch, cw) = images[0].shape();
    let whole =
        images.iter().all(|i| i.format == PixelFormat::RgbUnspecified && i.canvas == (i.width, i.height));
    if whole {
        // Whole canvases: a view, no copy.
        return flat
            .view([images.len() as i64, ch as i64, cw as i64, 3])
            .permute([0, 3, 1, 2])
            .to_kind(Kind::Float);
    }
    let canvas = Tensor::zeros([images.len() as i64, 3, ch as i64, cw as i64], (Kind::Float, device));
    let mut start = 0;
    for (i, (img, len)) in images.iter().zip(&lens).enumerate() {
        let rgb = to_rgb(img, &flat.narrow(0, start, *len));
        start += len;
        let (x, y) = img.place;
        let mut dst =
            canvas.get(i as i64).narrow(1, y as i64, img.height as i64).narrow(2, x as i64, img.width as i64);
        dst.copy_(&rgb);
    }
    canvas
}

/// One picture's bytes (u8, on the device) as float CHW RGB.
fn to_rgb(img: &ImageInput, bytes: &Tensor) -> Tensor {
    let (h, w) = (img.height as i64, img.width as i64);
    match img.format {
        PixelFormat::RgbUnspecified => bytes.view([h, w, 3]).permute([2, 0, 1]).to_kind(Kind::Float),
        PixelFormat::I420 => {
            let (ch, cw) = ((h + 1) / 2, (w + 1) / 2);
            let y = bytes.narrow(0, 0, h * w).view([h, w]).to_kind(Kind::Float);
            // Each chroma sample covers 2x2 pixels (the JPEG/JFIF convention, as decoders do).
            let up = |t: Tensor| {
                t.view([ch, cw])
                    .repeat_interleave_self_int(2, 0, None)
                    .repeat_interleave_self_int(2, 1, None)
                    .narrow(0, 0, h)
                    .narrow(1, 0, w)
                    .to_kind(Kind::Float)
                    - 128.0
            };
            let u = up(bytes.narrow(0, h * w, ch * cw));
            let v = up(bytes.narrow(0, h * w + ch * cw, ch * cw));
            let r = &y + &v * 1.402;
            let g = &y - &u * 0.344_136 - &v * 0.714_136;
            let b = &y + &u * 1.772;
            Tensor::stack(&[r, g, b], 0).clamp(0.0, 255.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(w: u32, h: u32, c: u32, len: usize) -> DetectRequest {
        DetectRequest {
            id: 1,
            data: vec![0u8; len].into(),
            width: w,
            height: h,
            channels: c,
            scale: 1.0,
            ..Default::default()
        }
    }

    const MAX: (u32, u32) = (640, 640);

    #[test]
    fn malformed_images_are_rejected_with_a_reason() {
        assert!(validate(&req(4, 2, 3, 24), MAX).is_ok());
        assert!(validate(&req(4, 2, 3, 23), MAX).unwrap_err().to_string().contains("24"));
        assert!(validate(&req(4, 2, 1, 8), MAX).unwrap_err().to_string().contains("channels"));
        assert!(validate(&req(0, 2, 3, 0), MAX).is_err());
        let mut r = req(4, 2, 3, 24);
        r.scale = f32::NAN;
        assert!(validate(&r, MAX).is_err());
        r.scale = 0.0;
        assert!(validate(&r, MAX).is_err());
        let mut r = req(4, 2, 3, 24);
        r.format = 7;
        assert!(validate(&r, MAX).unwrap_err().to_string().contains("pixel format 7"));
    }

    #[test]
    fn inputs_larger_than_the_model_input_are_rejected() {
        assert!(validate(&req(640, 640, 3, 640 * 640 * 3), MAX).is_ok());
        let e = validate(&req(641, 640, 3, 641 * 640 * 3), MAX).unwrap_err();
        assert_eq!(e, InvalidImage::Canvas { max: MAX, got: (641, 640) });
        assert!(e.to_string().contains("model's input"), "{e}");
        assert!(validate(&req(640, 4096, 3, 640 * 4096 * 3), MAX).is_err());
    }

    #[test]
    fn huge_dimensions_are_refused_without_overflow() {
        let big = u32::MAX;
        for format in [PixelFormat::RgbUnspecified, PixelFormat::I420] {
            assert_eq!(expected_len(format, big, big), None, "{format:?}");
            for (w, h, cw, ch) in [(big, big, 0, 0), (big, big, 640, 640), (big, 1, 640, 640), (1, big, 8, 8)]
            {
                let mut r = req(w, h, 3, 12);
                (r.format, r.canvas_width, r.canvas_height) = (format as i32, cw, ch);
                (r.original_width, r.original_height) = (big, big);
                assert!(validate(&r, MAX).is_err(), "{format:?} {w}x{h} on {cw}x{ch}");
            }
        }
        let mut r = req(4, 2, 3, 24);
        (r.canvas_width, r.canvas_height, r.offset_x, r.offset_y) = (big, big, f32::MAX, 0.0);
        assert!(validate(&r, MAX).unwrap_err().to_string().contains("model's input"));
        (r.canvas_width, r.canvas_height) = (8, 8);
        assert!(validate(&r, MAX).unwrap_err().to_string().contains("does not fit"));
    }

    #[test]
    fn original_size_defaults_to_the_tensor_size() {
        let img = validate(&req(4, 2, 3, 24), MAX).unwrap();
        assert_eq!((img.original_width, img.original_height), (4, 2));
    }

    #[test]
    fn padded_content_must_fit_its_canvas_at_whole_pixels() {
        let mut r = req(5, 3, 3, expected_len(PixelFormat::I420, 5, 3).unwrap());
        r.format = PixelFormat::I420 as i32;
        (r.canvas_width, r.canvas_height, r.offset_x, r.offset_y) = (8, 8, 3.0, 5.0);
        assert_eq!(expected_len(PixelFormat::I420, 5, 3), Some(15 + 2 * 6));
        let img = validate(&r, MAX).unwrap();
        assert_eq!((img.shape(), img.place), ((8, 8), (3, 5)));
        r.offset_x = 4.0;
        assert!(validate(&r, MAX).unwrap_err().to_string().contains("does not fit"));
        r.offset_x = 1.5;
        assert!(validate(&r, MAX).unwrap_err().to_string().contains("whole"));
        (r.offset_x, r.canvas_width) = (0.0, 641);
        assert!(validate(&r, MAX).unwrap_err().to_string().contains("model's input"));
    }

    #[test]
    fn i420_content_becomes_the_same_padded_rgb_canvas() {
        // A flat colour: its YUV is exact, so the device conversion must give it back.
        let (w, h, rgb) = (3u32, 3u32, [200.0f64, 100.0, 50.0]);
        let yy = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2];
        let u = 128.0 - 0.168_736 * rgb[0] - 0.331_264 * rgb[1] + 0.5 * rgb[2];
        let v = 128.0 + 0.5 * rgb[0] - 0.418_688 * rgb[1] - 0.081_312 * rgb[2];
        let mut data = vec![yy.round() as u8; 9];
        data.extend([u.round() as u8; 4]);
        data.extend([v.round() as u8; 4]);
        let mut r = DetectRequest {
            data: data.into(),
            width: w,
            height: h,
            channels: 3,
            scale: 1.0,
            ..Default::default()
        };
        (r.format, r.canvas_width, r.canvas_height, r.offset_x, r.offset_y) =
            (PixelFormat::I420 as i32, 4, 5, 1.0, 2.0);
        let img = validate(&r, MAX).unwrap();
        let t = assemble(&[&img], Device::Cpu);
        assert_eq!(t.size(), [1, 3, 5, 4]);
        let at = |c: i64, y: i64, x: i64| t.double_value(&[0, c, y, x]);
        for c in 0..3 {
            assert_eq!(at(c, 0, 0), 0.0, "padding is black");
            assert_eq!(at(c, 1, 1), 0.0, "padding is black");
            assert!((at(c, 3, 2) - rgb[c as usize]).abs() < 2.0, "channel {c}: {}", at(c, 3, 2));
        }
    }
}
