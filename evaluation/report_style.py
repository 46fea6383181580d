"""The inline stylesheet of the HTML report (kept in Python so it ships with the package)."""

STYLE = """
:root { color-scheme: light; --ink: #111827; --muted: #6b7280; --line: #e5e7eb; --panel: #ffffff; }
* { box-sizing: border-box; }
body { margin: 0; background: #f3f4f6; color: var(--ink);
       font: 14px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1100px; margin: 0 auto; padding: 28px 24px 40px; }
header { margin-bottom: 18px; }
h1 { font-size: 26px; margin: 0 0 4px; letter-spacing: -0.01em; }
h2 { font-size: 17px; margin: 0 0 6px; }
.meta, .caption, .hint, footer { color: var(--muted); }
.caption { margin: 0 0 12px; }
section { background: var(--panel); border: 1px solid var(--line); border-radius: 10px; padding: 18px 20px;
          margin: 0 0 18px; box-shadow: 0 1px 2px rgba(0, 0, 0, 0.04); }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th, td { text-align: right; padding: 6px 12px; border-bottom: 1px solid var(--line); }
th:first-child, td:first-child { text-align: left; }
thead th { color: var(--muted); font-weight: 600; font-size: 12px; text-transform: uppercase;
           letter-spacing: 0.04em; }
tbody th { font-weight: 600; }
.hint { display: block; font-weight: 400; font-size: 12px; }
td.good { color: #047857; font-weight: 600; }
td.bad { color: #b91c1c; font-weight: 600; }
svg.plot { display: block; height: auto; }
code { font: 12px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
ol.samples li { margin: 0 0 6px; white-space: pre-wrap; overflow-wrap: anywhere; }
footer { font-size: 12px; text-align: center; }
"""
