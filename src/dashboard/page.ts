/**
 * The dashboard's page and stylesheet, static: everything shown comes from the JSON API and is put in
 * the page by client.js as text (never as HTML). No inline script, so the CSP can forbid them all.
 */

export const PAGE_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>pgpubsub</title>
<link rel="stylesheet" href="style.css">
<script type="module" src="app.js"></script>
</head>
<body>
<header>
  <h1>pgpubsub</h1>
  <span id="mode" class="badge" hidden>read-only</span>
  <span id="updated" class="muted"></span>
  <span id="error" class="error" role="alert"></span>
</header>
<main>
  <section>
    <h2>Channels and listeners</h2>
    <p id="totals" class="muted"></p>
    <table id="listeners">
      <thead><tr><th>Channel</th><th>Listener</th><th class="n">Pending</th><th class="n">Running</th><th class="n">Failing</th><th class="n">Dead</th><th class="n">Oldest</th><th class="n">Per min</th></tr></thead>
      <tbody></tbody>
    </table>
    <p id="workers" class="muted"></p>
  </section>
  <section id="schedules-section" hidden>
    <h2>Schedules</h2>
    <table id="schedules">
      <thead><tr><th>Schedule</th><th>When</th><th>Catch up</th><th>Last slot</th><th>Next slot</th><th class="n">Runs</th><th class="n">Skipped</th></tr></thead>
      <tbody></tbody>
    </table>
  </section>
  <section>
    <h2>Throughput</h2>
    <p id="throughput" class="muted"></p>
    <div id="chart"></div>
  </section>
  <section>
    <h2>Database vs. listeners</h2>
    <p id="drift-summary"></p>
    <ul id="drift"></ul>
  </section>
  <section>
    <h2>Dead letters</h2>
    <form id="dead-filter">
      <label>Channel <input name="channel" autocomplete="off"></label>
      <label>Listener <input name="listener" autocomplete="off"></label>
      <button type="submit">Filter</button>
      <span class="mutations">
        <button type="button" id="retry-all">Retry all matching</button>
        <button type="button" id="purge-all" class="danger">Purge all matching</button>
      </span>
    </form>
    <p id="action-result" role="status"></p>
    <p id="dead-summary" class="muted"></p>
    <table id="dead">
      <thead><tr><th>Id</th><th>Channel</th><th>Listener</th><th class="n">Attempts</th><th>Dead since</th><th>Error</th><th>Payload</th><th class="mutations"></th></tr></thead>
      <tbody></tbody>
    </table>
  </section>
</main>
</body>
</html>
`;

export const PAGE_CSS = `:root { font-family: system-ui, sans-serif; font-size: 14px; color: #1d2330; background: #f6f7f9; }
body { margin: 0; }
header { display: flex; gap: 1em; align-items: baseline; padding: 0.8em 1.5em; background: #1d2330; color: #fff; }
header h1 { font-size: 1.2em; margin: 0; }
main { padding: 0 1.5em 2em; }
section { background: #fff; border: 1px solid #dde1e8; border-radius: 6px; padding: 0.5em 1em 1em; margin-top: 1em; }
h2 { font-size: 1.05em; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 0.3em 0.6em; border-bottom: 1px solid #eceef2; vertical-align: top; }
th.n, td.n { text-align: right; font-variant-numeric: tabular-nums; }
td.warn { color: #a15c00; font-weight: 600; }
td.bad { color: #b3261e; font-weight: 600; }
summary { cursor: pointer; max-width: 40em; overflow-wrap: anywhere; }
pre { margin: 0; max-width: 40em; max-height: 12em; overflow: auto; white-space: pre-wrap; word-break: break-all; font-size: 12px; }
.muted { color: #6b7385; }
.error { color: #ffb4ab; }
.badge { background: #ffd166; color: #1d2330; border-radius: 4px; padding: 0 0.5em; font-weight: 600; }
.ok { color: #1b7f3b; }
.problem { color: #b3261e; }
button { cursor: pointer; }
button.danger { color: #b3261e; }
body.read-only .mutations { display: none; }
form label { margin-right: 1em; }
svg .bar { fill: #3d6fd8; }
svg .axis { stroke: #9aa1b1; stroke-width: 1; }
svg text { fill: #6b7385; font-size: 11px; }
`;
