//! Maps drawn over images: a JET colour scale blended half and half with the picture, and a
//! contact sheet of several such overlays.

use std::io::Cursor;

use crate::grid::upsample_bilinear;
use crate::metrics::to_u8;

/// An RGB picture, row-major, 3 bytes a pixel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overlay {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

impl Overlay {
    /// The picture as PNG bytes.
    pub fn png(&self) -> Vec<u8> {
        let mut out = Vec::new();
        image::write_buffer_with_format(
            &mut Cursor::new(&mut out),
            &self.data,
            self.width as u32,
            self.height as u32,
            image::ExtendedColorType::Rgb8,
            image::ImageFormat::Png,
        )
        .expect("encoding an RGB buffer to memory cannot fail");
        out
    }
}

/// The JET colour of `v` in `[0, 1]` (blue, cyan, yellow, red), as the piecewise-linear
/// ramps of the classic colour map.
pub fn jet(v: f32) -> [u8; 3] {
    let v = v.clamp(0.0, 1.0);
    let ramp =
        |centre: f32| ((1.5 - (4.0 * v - centre).abs()).clamp(0.0, 1.0) * 255.0).round() as u8;
    [ramp(3.0), ramp(2.0), ramp(1.0)]
}

/// A `rows × cols` map (values in `[0, 1]`, quantised to 8 bits as TAM outputs them) upsampled
/// over an RGB image of `width × height` and blended 50/50 with it.
pub fn overlay(
    image: &[u8],
    width: usize,
    height: usize,
    map: &[f32],
    rows: usize,
    cols: usize,
) -> Overlay {
    assert_eq!(
        image.len(),
        3 * width * height,
        "image is not width × height RGB"
    );
    let quantized: Vec<f32> = to_u8(map).iter().map(|&v| v as f32 / 255.0).collect();
    let up = upsample_bilinear(&quantized, rows, cols, width, height);
    let data = image
        .chunks(3)
        .zip(&up)
        .flat_map(|(px, &v)| {
            let c = jet(v);
            [0, 1, 2].map(|i| (px[i] as u16 + c[i] as u16).div_ceil(2) as u8)
        })
        .collect();
    Overlay {
        width,
        height,
        data,
    }
}

/// Overlays side by side, `columns` a row, on white with a 4-pixel gutter (every overlay is
/// drawn at the size of the largest).
pub fn contact_sheet(overlays: &[Overlay], columns: usize) -> Overlay {
    const GUTTER: usize = 4;
    let columns = columns.max(1).min(overlays.len().max(1));
    let rows = overlays.len().div_ceil(columns);
    let cell_w = overlays.iter().map(|o| o.width).max().unwrap_or(0);
    let cell_h = overlays.iter().map(|o| o.height).max().unwrap_or(0);
    let width = columns * cell_w + (columns + 1) * GUTTER;
    let height = rows * cell_h + (rows + 1) * GUTTER;
    let mut data = vec![255u8; 3 * width * height];
    for (i, o) in overlays.iter().enumerate() {
        let x0 = GUTTER + (i % columns) * (cell_w + GUTTER);
        let y0 = GUTTER + (i / columns) * (cell_h + GUTTER);
        for y in 0..o.height {
            let src = &o.data[3 * y * o.width..3 * (y + 1) * o.width];
            let start = 3 * ((y0 + y) * width + x0);
            data[start..start + src.len()].copy_from_slice(src);
        }
    }
    Overlay {
        width,
        height,
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jet_runs_from_blue_to_red() {
        assert_eq!(jet(0.0), [0, 0, 128]);
        assert_eq!(jet(1.0), [128, 0, 0]);
        let mid = jet(0.5);
        assert!(mid[1] == 255 && mid[0] == mid[2]);
    }

    #[test]
    fn overlay_blends_and_encodes() {
        let image = vec![200u8; 3 * 8 * 4];
        let o = overlay(&image, 8, 4, &[0.0, 1.0], 1, 2);
        assert_eq!((o.width, o.height), (8, 4));
        // Left is blue-ish, right red-ish.
        assert!(o.data[2] > o.data[0]);
        let right = 3 * 7;
        assert!(o.data[right] > o.data[right + 2]);
        let png = o.png();
        assert_eq!(&png[1..4], b"PNG");
        let sheet = contact_sheet(&[o.clone(), o.clone(), o], 2);
        assert_eq!((sheet.width, sheet.height), (2 * 8 + 12, 2 * 4 + 12));
    }
}
