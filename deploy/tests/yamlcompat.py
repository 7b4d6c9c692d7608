"""PyYAML as kubectl reads YAML: kustomize writes the matcher type `=` unquoted; PyYAML (YAML 1.1) reads a bare `=`
as the obsolete "value" tag, Go's YAML (kubectl, the API server) as the string "=". Import this before loading."""

import yaml

yaml.SafeLoader.add_constructor("tag:yaml.org,2002:value", lambda loader, node: loader.construct_scalar(node))
