// Command render renders a Helm chart the way `helm template` does, for machines without a
// helm binary. It is a faithful subset of helm.sh/helm/v3 pkg/engine, pkg/chartutil:
//
//   - Go text/template with sprig's TxtFuncMap minus env/expandenv (Helm removes them),
//     plus Helm's toYaml/fromYaml/fromYamlArray/toJson/fromJson/fromJsonArray (sigs.k8s.io/yaml,
//     as Helm), include (with Helm's recursion limit), tpl, required, fail and lookup (which,
//     as in `helm template`, returns an empty map);
//   - every file under templates/ parsed into one template set named <chart>/templates/...,
//     in Helm's parse order (deeper paths first, reverse lexical within a depth, so when two
//     files define the same name the lexically first file's definition wins), partials (_*)
//     not rendered, "missingkey=zero", "<no value>" removed from the output; tpl parses its
//     text into a copy of the set with include / tpl bound to that copy, so a tpl string can
//     define and include its own templates;
//   - values: the -f files merged in order (later wins, maps merge deeply, null kept), then
//     coalesced with values.yaml (defaults fill the gaps, a null deletes the default), read
//     with sigs.k8s.io/yaml as Helm does (so numbers are float64);
//   - .Release (Name, Namespace, Service "Helm", IsInstall, IsUpgrade, Revision), .Chart
//     (from Chart.yaml, Helm's field names), .Capabilities (KubeVersion, APIVersions.Has),
//     .Template (Name, BasePath), .Files (Get, GetBytes, Glob, AsConfig, AsSecrets, Lines).
//
// Not implemented (the chart must not use them; a template that does fails to parse): toToml,
// subcharts/dependencies, library charts, schema validation (values.schema.json),
// hooks ordering, NOTES.txt rendering. Manifests are printed in file order, not sorted by
// kind as `helm template` prints them.
//
// Build offline in GOPATH mode with Debian's packages (golang-go,
// golang-github-masterminds-sprig-dev, golang-k8s-sigs-yaml-dev):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o render .
//
// Usage: render [-f values.yaml]... [--name N] [--namespace NS] [--kube-version 1.30.0] CHART_DIR
// Output: the rendered manifests, each preceded by "---\n# Source: <template>\n" as helm prints.
package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"text/template"

	sprig "github.com/Masterminds/sprig" // v3 (Debian: golang-github-masterminds-sprig-dev)
	"sigs.k8s.io/yaml"
)

const recursionMaxNums = 1000 // Helm's limit on nested include of one name

type valueFiles []string

func (v *valueFiles) String() string     { return strings.Join(*v, ",") }
func (v *valueFiles) Set(s string) error { *v = append(*v, s); return nil }

// ---- .Capabilities -------------------------------------------------------------------------

type KubeVersion struct{ Version, Major, Minor string }

func (k KubeVersion) String() string     { return k.Version }
func (k KubeVersion) GitVersion() string { return k.Version }

type VersionSet []string

func (v VersionSet) Has(apiVersion string) bool {
	for _, x := range v {
		if x == apiVersion {
			return true
		}
	}
	return false
}

type Capabilities struct {
	KubeVersion KubeVersion
	APIVersions VersionSet
}

// ---- .Files ----------------------------------------------------------------------------------

type Files map[string][]byte

func (f Files) GetBytes(name string) []byte { return f[name] }
func (f Files) Get(name string) string      { return string(f[name]) }
func (f Files) Glob(pattern string) Files {
	out := Files{}
	for name, data := range f {
		if ok, _ := path.Match(pattern, name); ok {
			out[name] = data
		}
	}
	return out
}
func (f Files) AsConfig() string {
	m := map[string]string{}
	for k, v := range f {
		m[path.Base(k)] = string(v)
	}
	return toYAML(m)
}
func (f Files) AsSecrets() string {
	m := map[string]string{}
	for k, v := range f {
		m[path.Base(k)] = base64.StdEncoding.EncodeToString(v)
	}
	return toYAML(m)
}
func (f Files) Lines(name string) []string {
	s := string(f[name])
	if s == "" {
		return []string{}
	}
	return strings.Split(s, "\n")
}

// ---- Helm's own template functions (pkg/engine/funcs.go) ----------------------------------

func toYAML(v interface{}) string {
	data, err := yaml.Marshal(v)
	if err != nil {
		return ""
	}
	return strings.TrimSuffix(string(data), "\n")
}

func fromYAML(str string) map[string]interface{} {
	m := map[string]interface{}{}
	if err := yaml.Unmarshal([]byte(str), &m); err != nil {
		m["Error"] = err.Error()
	}
	return m
}

func fromYAMLArray(str string) []interface{} {
	a := []interface{}{}
	if err := yaml.Unmarshal([]byte(str), &a); err != nil {
		a = []interface{}{err.Error()}
	}
	return a
}

func toJSON(v interface{}) string {
	data, err := json.Marshal(v)
	if err != nil {
		return ""
	}
	return string(data)
}

func fromJSON(str string) map[string]interface{} {
	m := make(map[string]interface{})
	if err := json.Unmarshal([]byte(str), &m); err != nil {
		m["Error"] = err.Error()
	}
	return m
}

func fromJSONArray(str string) []interface{} {
	a := []interface{}{}
	if err := json.Unmarshal([]byte(str), &a); err != nil {
		a = []interface{}{err.Error()}
	}
	return a
}

func warnWrap(warn string) string { return "\x00" + warn + "\x00" }

func baseFuncMap() template.FuncMap {
	f := sprig.TxtFuncMap()
	delete(f, "env")
	delete(f, "expandenv")
	for k, v := range (template.FuncMap{
		"toYaml": toYAML, "fromYaml": fromYAML, "fromYamlArray": fromYAMLArray,
		"toJson": toJSON, "fromJson": fromJSON, "fromJsonArray": fromJSONArray,
		"include":  func(string, interface{}) string { return "not implemented" },
		"tpl":      func(string, interface{}) interface{} { return "not implemented" },
		"required": func(string, interface{}) (interface{}, error) { return "not implemented", nil },
		"lookup": func(string, string, string, string) (map[string]interface{}, error) {
			return map[string]interface{}{}, nil
		},
	}) {
		f[k] = v
	}
	return f
}

// initFunMap mirrors Engine.initFunMap: include / tpl bound to the template set, required, fail.
func initFunMap(t *template.Template) {
	funcMap := baseFuncMap()
	includedNames := map[string]int{}
	funcMap["include"] = func(name string, data interface{}) (string, error) {
		var buf strings.Builder
		if v, ok := includedNames[name]; ok {
			if v > recursionMaxNums {
				return "", fmt.Errorf("rendering template has a nested reference name: %s: unable to execute template", name)
			}
			includedNames[name]++
		} else {
			includedNames[name] = 1
		}
		err := t.ExecuteTemplate(&buf, name, data)
		includedNames[name]--
		return buf.String(), err
	}
	funcMap["tpl"] = func(tpl string, vals map[string]interface{}) (string, error) {
		clone, err := t.Clone()
		if err != nil {
			return "", err
		}
		clone.Option("missingkey=zero")
		initFunMap(clone) // include / tpl inside the text see the text's own defines too
		templateName := "tpl"
		if tmpl, ok := vals["Template"].(map[string]interface{}); ok {
			if name, ok := tmpl["Name"].(string); ok {
				templateName = name
			}
		}
		if _, err := clone.New(templateName).Parse(tpl); err != nil {
			return "", fmt.Errorf("cannot parse template %q: %w", tpl, err)
		}
		var buf strings.Builder
		if err := clone.ExecuteTemplate(&buf, templateName, vals); err != nil {
			return "", fmt.Errorf("error during tpl function execution for %q: %w", tpl, err)
		}
		return strings.ReplaceAll(buf.String(), "<no value>", ""), nil
	}
	funcMap["required"] = func(warn string, val interface{}) (interface{}, error) {
		if val == nil {
			return val, errors.New(warnWrap(warn))
		} else if s, ok := val.(string); ok && s == "" {
			return val, errors.New(warnWrap(warn))
		}
		return val, nil
	}
	funcMap["fail"] = func(msg string) (string, error) { return "", errors.New(warnWrap(msg)) }
	t.Funcs(funcMap)
}

// ---- values (pkg/chartutil coalesce) ----------------------------------------------------------

func readValues(file string) (map[string]interface{}, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	vals := map[string]interface{}{}
	if err := yaml.Unmarshal(data, &vals); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	if vals == nil {
		vals = map[string]interface{}{}
	}
	return vals, nil
}

// mergeUserValues overlays a later -f file onto the earlier ones (helm's pkg/cli/values
// mergeMaps): maps merge deeply, anything else (null included) replaces.
func mergeUserValues(dst, src map[string]interface{}) map[string]interface{} {
	for k, v := range src {
		if srcMap, ok := v.(map[string]interface{}); ok {
			if dstMap, ok := dst[k].(map[string]interface{}); ok {
				dst[k] = mergeUserValues(dstMap, srcMap)
				continue
			}
		}
		dst[k] = v
	}
	return dst
}

// coalesceDefaults fills the user's values from the chart's defaults (chartutil.CoalesceValues):
// a key the user set to null is deleted, tables coalesce recursively, the user's value wins.
func coalesceDefaults(user, defaults map[string]interface{}) map[string]interface{} {
	for k, def := range defaults {
		value, set := user[k]
		switch {
		case set && value == nil:
			delete(user, k)
		case !set:
			user[k] = def
		default:
			userMap, userIsMap := value.(map[string]interface{})
			defMap, defIsMap := def.(map[string]interface{})
			if userIsMap && defIsMap {
				user[k] = coalesceDefaults(userMap, defMap)
			}
		}
	}
	return user
}

// sortTemplates orders template names as Helm's engine parses them: deeper paths first,
// reverse lexical order within one depth.
func sortTemplates(names []string) {
	sort.Slice(names, func(i, j int) bool {
		di, dj := strings.Count(names[i], "/"), strings.Count(names[j], "/")
		if di != dj {
			return di > dj
		}
		return names[i] > names[j]
	})
}

// chartMetadata maps Chart.yaml keys to the field names of helm's chart.Metadata.
func chartMetadata(dir string) (map[string]interface{}, error) {
	raw, err := readValues(filepath.Join(dir, "Chart.yaml"))
	if err != nil {
		return nil, err
	}
	meta := map[string]interface{}{}
	for k, v := range raw {
		meta[strings.ToUpper(k[:1])+k[1:]] = v
	}
	if meta["Name"] == nil || meta["Version"] == nil || meta["ApiVersion"] == nil {
		return nil, errors.New("Chart.yaml needs apiVersion, name and version")
	}
	meta["APIVersion"] = meta["ApiVersion"]
	return meta, nil
}

func loadFiles(dir string) (Files, map[string]string, error) {
	files := Files{}
	templates := map[string]string{}
	err := filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		rel = filepath.ToSlash(rel)
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		switch {
		case strings.HasPrefix(rel, "templates/"):
			templates[rel] = string(data)
		case rel == "Chart.yaml" || rel == "values.yaml" || strings.HasPrefix(rel, "charts/"):
		default:
			files[rel] = data
		}
		return nil
	})
	return files, templates, err
}

func main() {
	var values valueFiles
	flag.Var(&values, "f", "values file (repeatable, later wins)")
	releaseName := flag.String("name", "release-name", "release name")
	namespace := flag.String("namespace", "default", "release namespace")
	kubeVersion := flag.String("kube-version", "1.30.0", "Kubernetes version for .Capabilities")
	apiVersions := flag.String("api-versions", "", "comma-separated extra API versions for .Capabilities.APIVersions")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: render [-f values.yaml]... [--name N] [--namespace NS] CHART_DIR")
		os.Exit(2)
	}
	if err := run(flag.Arg(0), values, *releaseName, *namespace, *kubeVersion, *apiVersions); err != nil {
		fmt.Fprintln(os.Stderr, "Error:", strings.ReplaceAll(err.Error(), "\x00", ""))
		os.Exit(1)
	}
}

func run(dir string, valueFiles []string, releaseName, namespace, kubeVersion, apiVersions string) error {
	meta, err := chartMetadata(dir)
	if err != nil {
		return err
	}
	defaults, err := readValues(filepath.Join(dir, "values.yaml"))
	if err != nil {
		return err
	}
	user := map[string]interface{}{}
	for _, file := range valueFiles {
		overlay, err := readValues(file)
		if err != nil {
			return err
		}
		user = mergeUserValues(user, overlay)
	}
	vals := coalesceDefaults(user, defaults)
	files, templates, err := loadFiles(dir)
	if err != nil {
		return err
	}
	parts := strings.SplitN(kubeVersion, ".", 3)
	if len(parts) < 2 {
		return fmt.Errorf("--kube-version %q is not MAJOR.MINOR[.PATCH]", kubeVersion)
	}
	versions := VersionSet{"v1", "apps/v1", "batch/v1", "policy/v1", "autoscaling/v2", "networking.k8s.io/v1",
		"rbac.authorization.k8s.io/v1"}
	if apiVersions != "" {
		versions = append(versions, strings.Split(apiVersions, ",")...)
	}
	chartName := meta["Name"].(string)
	top := map[string]interface{}{
		"Values":  vals,
		"Chart":   meta,
		"Files":   files,
		"Release": map[string]interface{}{"Name": releaseName, "Namespace": namespace, "Service": "Helm", "IsInstall": true, "IsUpgrade": false, "Revision": 1},
		"Capabilities": &Capabilities{
			KubeVersion: KubeVersion{Version: "v" + kubeVersion, Major: parts[0], Minor: parts[1]},
			APIVersions: versions,
		},
	}

	t := template.New("gotpl")
	t.Option("missingkey=zero")
	initFunMap(t)
	names := make([]string, 0, len(templates))
	for rel := range templates {
		names = append(names, rel)
	}
	sortTemplates(names)
	for _, rel := range names {
		name := chartName + "/" + rel
		if _, err := t.New(name).Parse(templates[rel]); err != nil {
			return fmt.Errorf("parse error in %s: %w", name, err)
		}
	}
	sort.Strings(names) // manifests in file order
	var out bytes.Buffer
	for _, rel := range names {
		if strings.HasPrefix(path.Base(rel), "_") || !(strings.HasSuffix(rel, ".yaml") || strings.HasSuffix(rel, ".yml") || strings.HasSuffix(rel, ".tpl")) {
			continue // partials and NOTES.txt produce no manifests
		}
		name := chartName + "/" + rel
		scope := map[string]interface{}{}
		for k, v := range top {
			scope[k] = v
		}
		scope["Template"] = map[string]interface{}{"Name": name, "BasePath": chartName + "/templates"}
		var buf strings.Builder
		if err := t.ExecuteTemplate(&buf, name, scope); err != nil {
			return fmt.Errorf("execution error in %s: %w", name, err)
		}
		rendered := strings.ReplaceAll(buf.String(), "<no value>", "")
		// helm template splits a file into documents and drops the empty ones
		for _, doc := range strings.Split(rendered, "\n---") {
			if strings.TrimSpace(strings.TrimPrefix(doc, "---")) == "" || isOnlyComments(doc) {
				continue
			}
			fmt.Fprintf(&out, "---\n# Source: %s\n%s\n", name, strings.TrimSpace(strings.TrimPrefix(strings.TrimLeft(doc, "\n"), "---")))
		}
	}
	_, err = os.Stdout.Write(out.Bytes())
	return err
}

func isOnlyComments(doc string) bool {
	for _, line := range strings.Split(doc, "\n") {
		line = strings.TrimSpace(line)
		if line != "" && line != "---" && !strings.HasPrefix(line, "#") {
			return false
		}
	}
	return true
}
