/**
 * A tiny dependency-free PNG line-chart writer: an RGBA canvas with line, rectangle and 5x7 bitmap text
 * drawing, encoded as PNG (RFC 2083: signature, IHDR, one zlib IDAT, IEND, each chunk with its CRC-32).
 * Enough for the benchmark's throughput-vs-concurrency plot; no native canvas, no network.
 */
import { deflateSync } from 'node:zlib';

export type Rgb = readonly [number, number, number];

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

export function crc32(buf: Uint8Array, crc = 0): number {
  let c = ~crc >>> 0;
  for (let i = 0; i < buf.length; i++) c = CRC_TABLE[(c ^ buf[i]!) & 0xff]! ^ (c >>> 8);
  return ~c >>> 0;
}

function chunk(type: string, data: Buffer): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt32BE(data.length, 0);
  head.write(type, 4, 'ascii');
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(data, crc32(head.subarray(4))), 0);
  return Buffer.concat([head, data, crc]);
}

/** Encodes 8-bit RGBA pixels (row-major, width*height*4 bytes) as a PNG file. */
export function encodePng(width: number, height: number, rgba: Uint8Array): Buffer {
  if (rgba.length !== width * height * 4) throw new Error('encodePng: pixel buffer size does not match width x height');
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 6; // colour type RGBA
  ihdr[10] = 0; // deflate
  ihdr[11] = 0; // adaptive filtering
  ihdr[12] = 0; // no interlace
  const stride = width * 4;
  const raw = Buffer.alloc((stride + 1) * height);
  for (let y = 0; y < height; y++) {
    raw[y * (stride + 1)] = 0; // filter type None
    raw.set(rgba.subarray(y * stride, (y + 1) * stride), y * (stride + 1) + 1);
  }
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', deflateSync(raw, { level: 9 })),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

/** 5x7 glyphs, one string of 7 rows of 5 pixels each. Lower case is drawn as upper case. */
const FONT: Record<string, string> = {
  A: '01110 10001 10001 11111 10001 10001 10001',
  B: '11110 10001 10001 11110 10001 10001 11110',
  C: '01110 10001 10000 10000 10000 10001 01110',
  D: '11110 10001 10001 10001 10001 10001 11110',
  E: '11111 10000 10000 11110 10000 10000 11111',
  F: '11111 10000 10000 11110 10000 10000 10000',
  G: '01110 10001 10000 10111 10001 10001 01111',
  H: '10001 10001 10001 11111 10001 10001 10001',
  I: '01110 00100 00100 00100 00100 00100 01110',
  J: '00111 00010 00010 00010 00010 10010 01100',
  K: '10001 10010 10100 11000 10100 10010 10001',
  L: '10000 10000 10000 10000 10000 10000 11111',
  M: '10001 11011 10101 10101 10001 10001 10001',
  N: '10001 10001 11001 10101 10011 10001 10001',
  O: '01110 10001 10001 10001 10001 10001 01110',
  P: '11110 10001 10001 11110 10000 10000 10000',
  Q: '01110 10001 10001 10001 10101 10010 01101',
  R: '11110 10001 10001 11110 10100 10010 10001',
  S: '01111 10000 10000 01110 00001 00001 11110',
  T: '11111 00100 00100 00100 00100 00100 00100',
  U: '10001 10001 10001 10001 10001 10001 01110',
  V: '10001 10001 10001 10001 10001 01010 00100',
  W: '10001 10001 10001 10101 10101 10101 01010',
  X: '10001 10001 01010 00100 01010 10001 10001',
  Y: '10001 10001 10001 01010 00100 00100 00100',
  Z: '11111 00001 00010 00100 01000 10000 11111',
  '0': '01110 10001 10011 10101 11001 10001 01110',
  '1': '00100 01100 00100 00100 00100 00100 01110',
  '2': '01110 10001 00001 00010 00100 01000 11111',
  '3': '11111 00010 00100 00010 00001 10001 01110',
  '4': '00010 00110 01010 10010 11111 00010 00010',
  '5': '11111 10000 11110 00001 00001 10001 01110',
  '6': '00110 01000 10000 11110 10001 10001 01110',
  '7': '11111 00001 00010 00100 01000 01000 01000',
  '8': '01110 10001 10001 01110 10001 10001 01110',
  '9': '01110 10001 10001 01111 00001 00010 01100',
  ' ': '00000 00000 00000 00000 00000 00000 00000',
  '.': '00000 00000 00000 00000 00000 01100 01100',
  ',': '00000 00000 00000 00000 01100 00100 01000',
  '-': '00000 00000 00000 11111 00000 00000 00000',
  '+': '00000 00100 00100 11111 00100 00100 00000',
  '=': '00000 00000 11111 00000 11111 00000 00000',
  '/': '00000 00001 00010 00100 01000 10000 00000',
  ':': '00000 01100 01100 00000 01100 01100 00000',
  '(': '00010 00100 01000 01000 01000 00100 00010',
  ')': '01000 00100 00010 00010 00010 00100 01000',
  '%': '11000 11001 00010 00100 01000 10011 00011',
  _: '00000 00000 00000 00000 00000 00000 11111',
  '?': '01110 10001 00001 00010 00100 00000 00100',
};
const GLYPHS = new Map(Object.entries(FONT).map(([ch, rows]) => [ch, rows.split(' ').map((r) => [...r].map((b) => b === '1'))]));

export class Canvas {
  readonly pixels: Uint8Array;

  constructor(
    readonly width: number,
    readonly height: number,
    background: Rgb = [255, 255, 255],
  ) {
    this.pixels = new Uint8Array(width * height * 4);
    this.fillRect(0, 0, width, height, background);
  }

  setPixel(x: number, y: number, [r, g, b]: Rgb): void {
    x = Math.round(x);
    y = Math.round(y);
    if (x < 0 || y < 0 || x >= this.width || y >= this.height) return;
    const i = (y * this.width + x) * 4;
    this.pixels[i] = r;
    this.pixels[i + 1] = g;
    this.pixels[i + 2] = b;
    this.pixels[i + 3] = 255;
  }

  fillRect(x: number, y: number, w: number, h: number, color: Rgb): void {
    for (let j = Math.round(y); j < Math.round(y + h); j++) for (let i = Math.round(x); i < Math.round(x + w); i++) this.setPixel(i, j, color);
  }

  /** Bresenham line, `thickness` pixels wide (a square brush). */
  line(x0: number, y0: number, x1: number, y1: number, color: Rgb, thickness = 1): void {
    x0 = Math.round(x0);
    y0 = Math.round(y0);
    x1 = Math.round(x1);
    y1 = Math.round(y1);
    const dx = Math.abs(x1 - x0);
    const dy = -Math.abs(y1 - y0);
    const sx = x0 < x1 ? 1 : -1;
    const sy = y0 < y1 ? 1 : -1;
    const half = Math.floor(thickness / 2);
    let err = dx + dy;
    for (;;) {
      if (thickness <= 1) this.setPixel(x0, y0, color);
      else this.fillRect(x0 - half, y0 - half, thickness, thickness, color);
      if (x0 === x1 && y0 === y1) return;
      const e2 = 2 * err;
      if (e2 >= dy) {
        err += dy;
        x0 += sx;
      }
      if (e2 <= dx) {
        err += dx;
        y0 += sy;
      }
    }
  }

  polyline(points: readonly (readonly [number, number])[], color: Rgb, thickness = 1): void {
    for (let i = 1; i < points.length; i++) this.line(points[i - 1]![0], points[i - 1]![1], points[i]![0], points[i]![1], color, thickness);
  }

  /** Width in pixels of `text` at `scale`. */
  static textWidth(text: string, scale = 1): number {
    return text.length === 0 ? 0 : (text.length * 6 - 1) * scale;
  }

  /** Draws `text` with its top-left corner at (x, y); unknown characters are drawn as '?'. */
  text(x: number, y: number, text: string, color: Rgb, scale = 1): void {
    let cx = Math.round(x);
    for (const ch of text.toUpperCase()) {
      const glyph = GLYPHS.get(ch) ?? GLYPHS.get('?')!;
      glyph.forEach((row, gy) => row.forEach((on, gx) => on && this.fillRect(cx + gx * scale, y + gy * scale, scale, scale, color)));
      cx += 6 * scale;
    }
  }

  toPng(): Buffer {
    return encodePng(this.width, this.height, this.pixels);
  }
}

export interface Series {
  label: string;
  color: Rgb;
  points: readonly { x: number; y: number }[];
}

export interface LineChart {
  title: string;
  xLabel: string;
  yLabel: string;
  series: readonly Series[];
  /** Place x on a log2 scale (concurrency 1, 4, 16, 64 evenly spaced). */
  xLog2?: boolean;
  width?: number;
  height?: number;
}

/** A "nice" tick step (1, 2 or 5 times a power of ten) giving about `target` ticks up to `max`. */
function niceStep(max: number, target: number): number {
  const raw = max / target;
  const pow = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 5, 10]) if (m * pow >= raw) return m * pow;
  return 10 * pow;
}

function formatTick(v: number): string {
  if (v >= 1000 && v % 1000 === 0) return `${v / 1000}K`;
  if (v >= 1000) return `${(v / 1000).toFixed(1)}K`;
  return String(Math.round(v * 100) / 100);
}

/** Renders a line chart (axes, grid, ticks, one polyline with markers per series, legend) as PNG bytes. */
export function lineChartPng(chart: LineChart): Buffer {
  const width = chart.width ?? 800;
  const height = chart.height ?? 500;
  const c = new Canvas(width, height);
  const ink: Rgb = [30, 30, 30];
  const grid: Rgb = [225, 225, 225];
  const left = 80;
  const right = width - 30;
  const top = 60;
  const bottom = height - 60;

  const all = chart.series.flatMap((s) => s.points);
  const fx = (x: number): number => (chart.xLog2 ? Math.log2(x) : x);
  const xs = [...new Set(all.map((p) => p.x))].sort((a, b) => a - b);
  const xMin = fx(xs[0] ?? 1);
  const xMax = fx(xs.at(-1) ?? 2);
  const yMaxData = Math.max(1, ...all.map((p) => p.y));
  const step = niceStep(yMaxData * 1.1, 6);
  const yMax = Math.ceil((yMaxData * 1.1) / step) * step;
  const px = (x: number): number => (xMax === xMin ? (left + right) / 2 : left + ((fx(x) - xMin) / (xMax - xMin)) * (right - left - 20) + 10);
  const py = (y: number): number => bottom - (y / yMax) * (bottom - top);

  c.text((width - Canvas.textWidth(chart.title, 2)) / 2, 16, chart.title, ink, 2);
  // Grid and y ticks.
  for (let v = 0; v <= yMax + step / 2; v += step) {
    const y = py(v);
    if (v > 0) c.line(left + 1, y, right, y, grid);
    c.line(left - 5, y, left, y, ink);
    const label = formatTick(v);
    c.text(left - 9 - Canvas.textWidth(label, 1), y - 3, label, ink, 1);
  }
  // X ticks at every x that has data.
  for (const x of xs) {
    const X = px(x);
    c.line(X, bottom, X, bottom + 5, ink);
    const label = String(x);
    c.text(X - Canvas.textWidth(label, 1) / 2, bottom + 10, label, ink, 1);
  }
  // Axes.
  c.line(left, top - 10, left, bottom, ink, 2);
  c.line(left, bottom, right, bottom, ink, 2);
  c.text(left - 40, top - 30, chart.yLabel, ink, 1);
  c.text((left + right - Canvas.textWidth(chart.xLabel, 1)) / 2, bottom + 30, chart.xLabel, ink, 1);

  // Series.
  for (const s of chart.series) {
    const pts = [...s.points].sort((a, b) => a.x - b.x).map((p) => [px(p.x), py(p.y)] as const);
    c.polyline(pts, s.color, 3);
    for (const [x, y] of pts) c.fillRect(x - 4, y - 4, 9, 9, s.color);
  }
  // Legend, top left inside the plot.
  chart.series.forEach((s, i) => {
    const y = top + 8 + i * 18;
    c.line(left + 16, y + 3, left + 40, y + 3, s.color, 3);
    c.text(left + 48, y, s.label, ink, 1);
  });
  return c.toPng();
}
