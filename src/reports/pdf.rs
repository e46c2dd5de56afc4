//! PDF rendering with printpdf: A4 pages, the PDF base fonts (Helvetica),
//! so all text is real, extractable text; tables and charts (axes, ticks,
//! labels, lines and bars) as vector graphics.

use printpdf::{
    BuiltinFont, Color, Line, LinePoint, Mm, Op, PaintMode, PdfDocument, PdfFontHandle, PdfPage,
    PdfSaveOptions, Point, Pt, Rect, Rgb, TextItem,
};

use super::{Cell, ChartStyle, Error, Report, Section};

const PAGE_W: f32 = 595.28;
const PAGE_H: f32 = 841.89;
const MARGIN: f32 = 50.0;
const ROW_H: f32 = 14.0;
const CHART_H: f32 = 150.0;

pub fn render(report: &Report) -> Result<Vec<u8>, Error> {
    let mut w = Writer::new();
    w.text(MARGIN, w.y, 20.0, true, &report.title);
    w.y -= 26.0;
    for line in report.header_lines() {
        for part in wrap(&line, 9.0, PAGE_W - 2.0 * MARGIN) {
            w.room(ROW_H);
            w.text(MARGIN, w.y, 9.0, false, &part);
            w.y -= ROW_H - 2.0;
        }
    }
    w.y -= 10.0;
    for s in &report.sections {
        match s {
            Section::Table {
                title,
                columns,
                rows,
            } => w.table(title, columns, rows),
            Section::Chart {
                title,
                style,
                labels,
                values,
                partial,
            } => w.chart(title, *style, labels, values, *partial),
        }
    }
    let pages = w.finish();
    let mut doc = PdfDocument::new(&report.title);
    let mut warnings = Vec::new();
    Ok(doc
        .with_pages(pages)
        .save(&PdfSaveOptions::default(), &mut warnings))
}

struct Writer {
    /// Finished pages' drawing operations; footers are added at the end,
    /// when the page count is known.
    pages: Vec<Vec<Op>>,
    ops: Vec<Op>,
    y: f32,
}

fn rgb(r: f32, g: f32, b: f32) -> Color {
    Color::Rgb(Rgb {
        r,
        g,
        b,
        icc_profile: None,
    })
}

fn point(x: f32, y: f32) -> LinePoint {
    LinePoint {
        p: Point { x: Pt(x), y: Pt(y) },
        bezier: false,
    }
}

/// The base fonts carry WinAnsi text: anything else becomes `?`.
fn ascii(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii() && !c.is_ascii_control() {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// Helvetica's width from its metrics (per 1000 units of the size): exact
/// for digits and punctuation, so right-aligned figures line up.
fn width(s: &str, size: f32) -> f32 {
    let units: u32 = s
        .chars()
        .map(|c| match c {
            '0'..='9' | '$' | '?' => 556,
            '.' | ',' | ' ' | '/' | ':' | ';' | '!' => 278,
            '-' | '(' | ')' | 'r' => 333,
            '%' => 889,
            'i' | 'j' | 'l' => 222,
            'f' | 't' | 'I' => 278,
            'm' => 833,
            'w' => 722,
            'M' => 833,
            'W' => 944,
            'A'..='Z' => 667,
            _ => 556,
        })
        .sum();
    units as f32 * size / 1000.0
}

/// A round axis maximum at or above `v`: 1, 2 or 5 × 10^k.
/// `s` in lines no wider than `max` at `size`, broken between words; the
/// lines after the first indented.
fn wrap(s: &str, size: f32, max: f32) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut line = String::new();
    for word in s.split(' ') {
        let candidate = if line.is_empty() {
            word.to_string()
        } else {
            format!("{line} {word}")
        };
        if !line.is_empty() && width(&candidate, size) > max {
            out.push(std::mem::take(&mut line));
            line = format!("    {word}");
        } else {
            line = candidate;
        }
    }
    out.push(line);
    out
}

fn nice_max(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|m| *m >= v)
        .unwrap_or(10.0 * p)
}

fn tick_label(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

impl Writer {
    fn new() -> Writer {
        Writer {
            pages: Vec::new(),
            ops: Vec::new(),
            y: PAGE_H - MARGIN,
        }
    }

    fn new_page(&mut self) {
        let ops = std::mem::take(&mut self.ops);
        self.pages.push(ops);
        self.y = PAGE_H - MARGIN;
    }

    /// Starts a new page unless `h` points fit above the bottom margin.
    fn room(&mut self, h: f32) {
        if self.y - h < MARGIN {
            self.new_page();
        }
    }

    /// The pages, each with its "page N of M" footer.
    fn finish(mut self) -> Vec<PdfPage> {
        if !self.ops.is_empty() || self.pages.is_empty() {
            self.new_page();
        }
        let total = self.pages.len();
        let pages = std::mem::take(&mut self.pages);
        pages
            .into_iter()
            .enumerate()
            .map(|(i, ops)| {
                self.ops = ops;
                self.text(
                    MARGIN,
                    25.0,
                    8.0,
                    false,
                    &format!("hxjobs report - page {} of {total}", i + 1),
                );
                PdfPage::new(Mm(210.0), Mm(297.0), std::mem::take(&mut self.ops))
            })
            .collect()
    }

    fn text(&mut self, x: f32, y: f32, size: f32, bold: bool, s: &str) {
        let font = if bold {
            BuiltinFont::HelveticaBold
        } else {
            BuiltinFont::Helvetica
        };
        self.ops.extend([
            Op::SetFillColor {
                col: rgb(0.0, 0.0, 0.0),
            },
            Op::StartTextSection,
            Op::SetFont {
                font: PdfFontHandle::Builtin(font),
                size: Pt(size),
            },
            Op::SetTextCursor {
                pos: Point { x: Pt(x), y: Pt(y) },
            },
            Op::ShowText {
                items: vec![TextItem::Text(ascii(s))],
            },
            Op::EndTextSection,
        ]);
    }

    fn line(&mut self, points: Vec<LinePoint>, thickness: f32, color: Color) {
        self.ops.extend([
            Op::SetOutlineColor { col: color },
            Op::SetOutlineThickness { pt: Pt(thickness) },
            Op::DrawLine {
                line: Line {
                    points,
                    is_closed: false,
                },
            },
        ]);
    }

    fn bar(&mut self, x: f32, y: f32, w: f32, h: f32, color: Color) {
        let mut polygon = Rect::from_xywh(Pt(x), Pt(y), Pt(w), Pt(h)).to_polygon();
        polygon.mode = PaintMode::Fill;
        self.ops
            .extend([Op::SetFillColor { col: color }, Op::DrawPolygon { polygon }]);
    }

    fn heading(&mut self, title: &str) {
        self.room(3.0 * ROW_H);
        self.text(MARGIN, self.y, 13.0, true, title);
        self.y -= ROW_H + 4.0;
    }

    fn table(&mut self, title: &str, columns: &[String], rows: &[Vec<Cell>]) {
        self.heading(title);
        let content = PAGE_W - 2.0 * MARGIN;
        let first = match columns.len() {
            0..=2 => content * 0.5,
            3..=5 => content * 0.34,
            _ => content * 0.22,
        };
        // Bold headers are wider than the estimate: smaller when columns are many.
        let head = if columns.len() > 5 { 8.0 } else { 9.0 };
        let rest = (content - first) / (columns.len().saturating_sub(1).max(1)) as f32;
        let cell_right = |i: usize| MARGIN + first + rest * i as f32;
        let header = |w: &mut Writer| {
            for (i, c) in columns.iter().enumerate() {
                if i == 0 {
                    w.text(MARGIN, w.y, head, true, c);
                } else {
                    let x = cell_right(i) - width(c, head) * 1.1;
                    w.text(x, w.y, head, true, c);
                }
            }
            let y = w.y - 4.0;
            w.line(
                vec![point(MARGIN, y), point(PAGE_W - MARGIN, y)],
                0.6,
                rgb(0.3, 0.3, 0.3),
            );
            w.y -= ROW_H + 2.0;
        };
        header(self);
        if rows.is_empty() {
            self.text(MARGIN, self.y, 9.0, false, "(no data for this period)");
            self.y -= ROW_H;
        }
        for row in rows {
            if self.y - ROW_H < MARGIN {
                self.new_page();
                header(self);
            }
            for (i, cell) in row.iter().enumerate() {
                let s = cell.shown();
                if i == 0 {
                    self.text(MARGIN, self.y, 9.0, false, &s);
                } else {
                    let x = cell_right(i) - width(&s, 9.0);
                    self.text(x, self.y, 9.0, false, &s);
                }
            }
            self.y -= ROW_H;
        }
        self.y -= 12.0;
    }

    /// A `None` value is a gap: no point, no bar.
    fn chart(
        &mut self,
        title: &str,
        style: ChartStyle,
        labels: &[String],
        values: &[Option<f64>],
        partial: Option<usize>,
    ) {
        // Heading, axis labels and the space below the chart.
        const AROUND: f32 = 2.0 * ROW_H + 4.0 + 4.0 + 30.0;
        // A chart drawn a little lower where the page has room for that,
        // rather than alone on a page of its own.
        let free = self.y - MARGIN - AROUND;
        let chart_h = if free >= CHART_H {
            CHART_H
        } else if free >= CHART_H * 0.7 {
            free
        } else {
            self.new_page();
            CHART_H
        };
        self.heading(title);
        let (left, right) = (MARGIN + 45.0, PAGE_W - MARGIN);
        let top = self.y - 4.0;
        let bottom = top - chart_h;
        let max = nice_max(values.iter().flatten().copied().fold(0.0, f64::max));
        let grey = rgb(0.45, 0.45, 0.45);
        // Axes.
        self.line(
            vec![point(left, top), point(left, bottom), point(right, bottom)],
            0.8,
            grey.clone(),
        );
        // Y ticks and grid.
        for k in 0..=4 {
            let v = max * f64::from(k) / 4.0;
            let y = bottom + chart_h * k as f32 / 4.0;
            self.line(
                vec![point(left - 4.0, y), point(left, y)],
                0.6,
                grey.clone(),
            );
            if k > 0 {
                self.line(
                    vec![point(left, y), point(right, y)],
                    0.2,
                    rgb(0.85, 0.85, 0.85),
                );
            }
            let label = tick_label(v);
            self.text(left - 7.0 - width(&label, 7.0), y - 2.5, 7.0, false, &label);
        }
        let n = values.len().max(1);
        let step = (right - left) / n as f32;
        let y_of = |v: f64| bottom + (v / max) as f32 * chart_h;
        // X ticks and labels, at most about 12.
        let every = n.div_ceil(12).max(1);
        for (i, l) in labels.iter().enumerate() {
            let x = left + step * (i as f32 + 0.5);
            self.line(
                vec![point(x, bottom), point(x, bottom - 3.0)],
                0.6,
                grey.clone(),
            );
            if i % every == 0 {
                let fits = ((step * every as f32) / (7.0 * 0.55)) as usize;
                let shown: String = l.chars().take(fits.clamp(4, 24)).collect();
                self.text(
                    x - width(&shown, 7.0) / 2.0,
                    bottom - 12.0,
                    7.0,
                    false,
                    &shown,
                );
            }
        }
        let blue = rgb(0.16, 0.38, 0.71);
        // The bucket still under way: pale, apart from the line.
        let pale = rgb(0.70, 0.78, 0.90);
        match style {
            ChartStyle::Line => {
                // One polyline per run of points with data.
                let mut runs: Vec<Vec<LinePoint>> = vec![Vec::new()];
                for (i, v) in values.iter().enumerate() {
                    match v {
                        Some(v) if partial == Some(i) => {
                            let (x, y) = (left + step * (i as f32 + 0.5), y_of(*v));
                            self.bar(x - 2.0, y - 2.0, 4.0, 4.0, pale.clone());
                            runs.push(Vec::new());
                        }
                        Some(v) => {
                            if let Some(run) = runs.last_mut() {
                                run.push(point(left + step * (i as f32 + 0.5), y_of(*v)));
                            }
                        }
                        None => runs.push(Vec::new()),
                    }
                }
                for pts in runs {
                    if pts.len() > 1 {
                        self.line(pts, 1.4, blue.clone());
                    } else if let Some(p) = pts.first() {
                        self.bar(p.p.x.0 - 2.0, p.p.y.0 - 2.0, 4.0, 4.0, blue.clone());
                    }
                }
            }
            ChartStyle::Bar => {
                for (i, v) in values.iter().enumerate() {
                    let Some(v) = v else { continue };
                    let x = left + step * i as f32 + step * 0.15;
                    let h = (y_of(*v) - bottom).max(0.0);
                    let fill = if partial == Some(i) {
                        pale.clone()
                    } else {
                        blue.clone()
                    };
                    self.bar(x, bottom, step * 0.7, h, fill);
                    // The value above its bar, where the bar is wide enough.
                    let s = tick_label(*v);
                    if width(&s, 7.0) <= step * 0.95 {
                        self.text(x, bottom + h + 3.0, 7.0, false, &s);
                    }
                }
            }
        }
        if let Some(l) = partial.and_then(|i| labels.get(i)) {
            let note = format!("pale: {l}, still under way (so far)");
            self.text(left, bottom - 22.0, 7.0, false, &note);
        }
        if values.iter().all(Option::is_none) {
            self.text(
                left + 10.0,
                bottom + chart_h / 2.0,
                9.0,
                false,
                "(no data for this period)",
            );
        }
        self.y = bottom - 30.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_maxima_are_round() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(7.0), 10.0);
        assert_eq!(nice_max(120.0), 200.0);
        assert_eq!(nice_max(4_100.0), 5_000.0);
        assert_eq!(tick_label(25_000.0), "25k");
    }
}
