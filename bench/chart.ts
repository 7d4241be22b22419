/**
 * W3's chart, hand-written SVG: per panel, each system's latency by percentile. x is the tail scale
 * −log10(1 − p) (50 %, 90 %, 99 %, 99.9 % equally spaced), y the latency on a log scale, so the median and
 * the tail are both readable.
 */
const COLORS = ['#1b9e77', '#d95f02', '#7570b3', '#e7298a', '#66a61e', '#a6761d'];
const W = 460;
const H = 340;
const M = { left: 56, right: 12, top: 30, bottom: 44 };

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
const tail = (p: number) => -Math.log10(1 - p);

export function latencyChart(title: string, panels: Array<{ title: string; series: Array<{ name: string; samples: number[] }> }>): string {
  const all = panels.flatMap((p) => p.series.flatMap((s) => s.samples)).filter((x) => x > 0);
  const lo = 10 ** Math.floor(Math.log10(Math.min(...all)));
  const hi = 10 ** Math.ceil(Math.log10(Math.max(...all)));
  const maxTail = Math.max(...panels.flatMap((p) => p.series.map((s) => tail((s.samples.length - 1) / s.samples.length))));
  const pw = W - M.left - M.right;
  const ph = H - M.top - M.bottom;
  const x = (t: number) => M.left + (t / maxTail) * pw;
  const y = (ms: number) => M.top + ph - ((Math.log10(Math.max(ms, lo)) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo))) * ph;
  const names = [...new Set(panels.flatMap((p) => p.series.map((s) => s.name)))];
  const color = (name: string) => COLORS[names.indexOf(name) % COLORS.length];
  const out: string[] = [];
  panels.forEach((panel, k) => {
    const g: string[] = [`<g transform="translate(${k * W},30)">`, `<text x="${M.left + pw / 2}" y="16" text-anchor="middle" font-weight="bold">${esc(panel.title)}</text>`];
    for (let d = lo; d <= hi * 1.001; d *= 10) {
      for (const m of [1, 2, 5]) {
        const v = d * m;
        if (v > hi * 1.001) break;
        g.push(`<line x1="${M.left}" x2="${M.left + pw}" y1="${y(v).toFixed(1)}" y2="${y(v).toFixed(1)}" stroke="#ddd"/>`);
        g.push(`<text x="${M.left - 4}" y="${(y(v) + 4).toFixed(1)}" text-anchor="end">${+v.toPrecision(2)}</text>`);
      }
    }
    for (const [label, p] of [['0', 0], ['50', 0.5], ['90', 0.9], ['99', 0.99], ['99.9', 0.999]] as const) {
      if (tail(p) > maxTail * 1.001) continue;
      g.push(`<line x1="${x(tail(p)).toFixed(1)}" x2="${x(tail(p)).toFixed(1)}" y1="${M.top}" y2="${M.top + ph}" stroke="#ddd"/>`);
      g.push(`<text x="${x(tail(p)).toFixed(1)}" y="${M.top + ph + 14}" text-anchor="middle">${label}</text>`);
    }
    g.push(`<text x="${M.left + pw / 2}" y="${H - 8}" text-anchor="middle">percentile</text>`);
    g.push(`<text transform="translate(14,${M.top + ph / 2}) rotate(-90)" text-anchor="middle">ms (log scale)</text>`);
    g.push(`<rect x="${M.left}" y="${M.top}" width="${pw}" height="${ph}" fill="none" stroke="#888"/>`);
    for (const s of panel.series) {
      const sorted = [...s.samples].sort((a, b) => a - b);
      const points = sorted.map((v, i) => `${x(tail(i / sorted.length)).toFixed(1)},${y(v).toFixed(1)}`).join(' ');
      g.push(`<polyline fill="none" stroke="${color(s.name)}" stroke-width="1.5" points="${points}"/>`);
    }
    g.push('</g>');
    out.push(...g);
  });
  const legend = names.map((n, i) => `<g transform="translate(${M.left + i * 200},${H + 44})"><rect width="14" height="4" y="-4" fill="${color(n)}"/><text x="18">${esc(n)}</text></g>`);
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W * panels.length}" height="${H + 56}" font-family="sans-serif" font-size="11">
<rect width="100%" height="100%" fill="white"/>
<text x="8" y="18" font-size="13">${esc(title)}</text>
${out.join('\n')}
${legend.join('\n')}
</svg>
`;
}
