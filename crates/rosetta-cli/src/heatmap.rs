//! Attention heatmaps as PNG files (`rosetta translate --attention-png DIR`).
//!
//! Rows are output pieces, columns source pieces (and the source `</s>`); darker means more attention.
//! Labels are drawn with a TrueType font found on the system (or `$ROSETTA_FONT`); without one the
//! grid is drawn unlabelled.

use ab_glyph::{Font, FontVec, PxScale, ScaleFont, point};
use anyhow::{Context, Result};
use image::{Rgb, RgbImage};
use std::path::{Path, PathBuf};

const CELL: u32 = 22;
const FONT_PX: f32 = 14.0;
const FONT_PATHS: [&str; 5] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf",
    "/Library/Fonts/Arial Unicode.ttf",
];

/// The bytes of a label font, if the system has one (shared with the sweep plots).
pub fn font_bytes() -> Option<Vec<u8>> {
    let candidates = std::env::var_os("ROSETTA_FONT")
        .map(PathBuf::from)
        .into_iter()
        .chain(FONT_PATHS.iter().map(PathBuf::from));
    for path in candidates {
        if let Ok(bytes) = std::fs::read(&path)
            && FontVec::try_from_vec(bytes.clone()).is_ok()
        {
            return Some(bytes);
        }
    }
    None
}

/// Loads a label font, if the system has one.
pub fn find_font() -> Option<FontVec> {
    font_bytes().and_then(|bytes| FontVec::try_from_vec(bytes).ok())
}

fn text_width(font: &FontVec, text: &str) -> f32 {
    let scaled = font.as_scaled(PxScale::from(FONT_PX));
    text.chars()
        .map(|c| scaled.h_advance(font.glyph_id(c)))
        .sum()
}

fn draw_text(img: &mut RgbImage, font: &FontVec, text: &str, x: f32, y: f32) {
    let scale = PxScale::from(FONT_PX);
    let scaled = font.as_scaled(scale);
    let mut caret = x;
    for c in text.chars() {
        let id = font.glyph_id(c);
        let glyph = id.with_scale_and_position(scale, point(caret, y + scaled.ascent()));
        caret += scaled.h_advance(id);
        if let Some(outline) = font.outline_glyph(glyph) {
            let bounds = outline.px_bounds();
            outline.draw(|gx, gy, coverage| {
                let px = bounds.min.x as i64 + gx as i64;
                let py = bounds.min.y as i64 + gy as i64;
                if px >= 0 && py >= 0 && (px as u32) < img.width() && (py as u32) < img.height() {
                    let p = img.get_pixel_mut(px as u32, py as u32);
                    for ch in &mut p.0 {
                        *ch = ((1.0 - coverage) * f32::from(*ch)) as u8;
                    }
                }
            });
        }
    }
}

/// Writes one heatmap. `attention[j][i]`: weight of source piece i for output piece j.
pub fn write(
    path: &Path,
    source: &[String],
    output: &[String],
    attention: &[Vec<f32>],
    font: Option<&FontVec>,
) -> Result<()> {
    let mut columns: Vec<String> = source.to_vec();
    columns.push("</s>".into());
    let rows = output.len().min(attention.len());
    let label = |s: &String| -> f32 { font.map_or(0.0, |f| text_width(f, s)) };
    let left = output.iter().map(label).fold(0.0, f32::max).ceil() as u32 + 8;
    // Column labels are written one character per line, top to bottom, above their column.
    let longest = columns.iter().map(|c| c.chars().count()).max().unwrap_or(0) as u32;
    let top = if font.is_some() {
        longest * FONT_PX as u32 + 8
    } else {
        4
    };
    let width = left + CELL * columns.len() as u32 + 4;
    let height = top + CELL * rows.max(1) as u32 + 4;
    let mut img = RgbImage::from_pixel(width, height, Rgb([255, 255, 255]));
    for (j, row) in attention.iter().take(rows).enumerate() {
        for (i, &w) in row.iter().take(columns.len()).enumerate() {
            let shade = (255.0 * (1.0 - w.clamp(0.0, 1.0))) as u8;
            for dy in 1..CELL {
                for dx in 1..CELL {
                    img.put_pixel(
                        left + i as u32 * CELL + dx,
                        top + j as u32 * CELL + dy,
                        Rgb([shade, shade, 255]),
                    );
                }
            }
        }
    }
    if let Some(font) = font {
        for (j, piece) in output.iter().take(rows).enumerate() {
            let x = left as f32 - 6.0 - text_width(font, piece);
            draw_text(
                &mut img,
                font,
                piece,
                x,
                (top + j as u32 * CELL) as f32 + 3.0,
            );
        }
        for (i, piece) in columns.iter().enumerate() {
            for (k, c) in piece.chars().enumerate() {
                let x = (left + i as u32 * CELL) as f32 + 6.0;
                draw_text(&mut img, font, &c.to_string(), x, k as f32 * FONT_PX + 2.0);
            }
        }
    }
    img.save(path)
        .with_context(|| format!("cannot write {}", path.display()))
}
