#!/usr/bin/env python3
"""render.py reads YAML with its own standard-library reader (users need no PyYAML). This checks it against PyYAML
on the real inhibit-rules file and on spellings a hand or a generator may use, and that it refuses what it does not
understand instead of guessing. Exit 1 on any disagreement."""

import importlib.util
import sys
from pathlib import Path

import yaml

root = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("render", root / "deploy/render.py")
render = importlib.util.module_from_spec(spec)
spec.loader.exec_module(render)

samples = {
    "real file": (root / "rules/dist/alertmanager-inhibit-rules.yaml").read_text(),
    "flow lists, quotes, comments": """# comment
inhibit_rules:   # trailing comment
- source_matchers: ['alertname="A"', "severity=\\"critical\\""]
  target_matchers:
    - 'severity=~"warning|info"'   # a '#' inside quotes: "x#y"
    - alertname!="Watch#dog"
  equal: [node, 'instance']
-   source_match:
      alertname: B
    target_match_re:
      severity: warning|info
    equal: []
""",
    "bare list": """- source_matchers:
  - a="1"
  target_matchers:
  - b="2"
""",
}
bad = {"anchor": "inhibit_rules:\n  - &x {a: 1}\n", "block scalar": "a: |\n  x\n", "tab": "a:\n\t- b\n"}
failed = 0
for name, text in samples.items():
    mine, ref = render.parse_yaml_subset(text, name), yaml.safe_load(text)
    if mine != ref:
        failed += 1
        print(f"FAIL {name}: {mine!r} != {ref!r}")
for name, text in bad.items():
    try:
        render.parse_yaml_subset(text, name)
        failed += 1
        print(f"FAIL {name}: accepted")
    except render.RenderError:
        pass
sys.exit(1 if failed else 0)
