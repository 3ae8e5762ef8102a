//! What decoding produces and how it is placed: the wire format, a detector pool's input shape,
//! the letterboxed image and its request, and where an image lands in the canvas.

use facesweep_proto::PixelFormat;

/// How pixels travel to the detector (`PixelFormat` in detector.proto).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Wire {
    /// The whole letterboxed canvas as RGB (1.2 MB at 640x640); every detector takes it.
    #[default]
    Canvas,
    /// Only the resized content as YUV 4:2:0 (1.5 bytes per content pixel, ~0.4 MB for a
    /// 3:2 photo), converted and padded on the detector's device.
    I420,
}

/// What a detector pool takes: its model's input size and the wire its detectors prefer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub width: u32,
    pub height: u32,
    pub wire: Wire,
}

impl Shape {
    /// `width`×`height` as the whole RGB canvas (every detector takes it).
    pub fn canvas(width: u32, height: u32) -> Self {
        Shape { width, height, wire: Wire::Canvas }
    }
}

/// An image ready for the detector: `data` is the whole letterboxed canvas (HWC RGB) or, when
/// `canvas` is set, only the resized content in `format`, placed at the offsets.
#[derive(Debug, Clone)]
pub struct Letterboxed {
    pub data: Vec<u8>,
    /// Size of `data`'s picture.
    pub width: u32,
    pub height: u32,
    pub format: PixelFormat,
    /// The canvas (width, height) the detector pads the content into; None: `data` is it.
    pub canvas: Option<(u32, u32)>,
    pub scale: f32,
    pub offset_x: f32,
    pub offset_y: f32,
    pub original_width: u32,
    pub original_height: u32,
}

impl Letterboxed {
    /// The detector request carrying this tensor (zero-copy: the buffer moves into `Bytes`).
    pub fn into_request(self, id: u64) -> facesweep_proto::DetectRequest {
        facesweep_proto::DetectRequest {
            id,
            data: self.data.into(),
            height: self.height,
            width: self.width,
            channels: 3,
            scale: self.scale,
            offset_x: self.offset_x,
            offset_y: self.offset_y,
            original_width: self.original_width,
            original_height: self.original_height,
            format: self.format as i32,
            canvas_width: self.canvas.map_or(0, |c| c.0),
            canvas_height: self.canvas.map_or(0, |c| c.1),
        }
    }
}

/// Where an image lands in the letterbox canvas.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Placement {
    /// The canvas: the model's input size.
    pub canvas: (u32, u32),
    /// Canvas pixels per original pixel.
    pub scale: f32,
    /// The resized image inside the canvas and its top-left corner.
    pub width: u32,
    pub height: u32,
    pub x: u32,
    pub y: u32,
}

/// Where a `w`×`h` (upright) image lands in a `tw`×`th` letterbox, centred.
pub fn fit(w: u32, h: u32, tw: u32, th: u32) -> Placement {
    let scale = (tw as f32 / w as f32).min(th as f32 / h as f32);
    let width = ((w as f32 * scale).round() as u32).clamp(1, tw);
    let height = ((h as f32 * scale).round() as u32).clamp(1, th);
    Placement { canvas: (tw, th), scale, width, height, x: (tw - width) / 2, y: (th - height) / 2 }
}
