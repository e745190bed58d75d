// Command luahealth runs Argo CD resource health checks (health.lua) against their
// health_test.yaml fixtures, in the same Lua runtime and with the same libraries that
// the Argo CD application controller uses for health checks defined in argocd-cm.
//
// What is mirrored from Argo CD (util/lua/lua.go, util/lua/health_test.go):
//   - runtime: github.com/yuin/gopher-lua (Lua 5.1);
//   - libraries: lua.NewState(SkipOpenLibs: true), then only package, base, table and a
//     "safe" os (time and date only, also preloaded for require("os")). The string, math,
//     io, coroutine, channel and debug libraries are NOT opened, which is what a script from
//     argocd-cm gets unless resource.customizations.useOpenLibs.<group>_<kind> is "true".
//     Pass -open-libs to emulate useOpenLibs (the argo-cd repository's own tests do that
//     because its built-in scripts run with open libs);
//   - input: the YAML fixture is decoded with sigs.k8s.io/yaml into map[string]any (YAML ->
//     JSON -> encoding/json, so every number is a float64) and converted to Lua values the
//     way Argo CD's decodeValue does (numbers -> LNumber, maps and lists -> tables), then
//     exposed as the global `obj`;
//   - a 1 second context timeout per script run;
//   - output: the returned table goes through gopher-json's Encode and encoding/json into
//     {status, message}; a status outside Healthy|Progressing|Degraded|Suspended|Missing|
//     Unknown becomes Unknown "Lua returned an invalid health status", as in Argo CD.
//
// Usage:
//
//	luahealth [-open-libs] [-timeout 1s] [-script health.lua] health_test.yaml|dir ...
//	luahealth [-open-libs] -eval obj.yaml health.lua    # print the health of one object
//
// A directory argument is searched recursively for health.lua files that have a sibling
// health_test.yaml. Exit status: 0 all tests pass, 1 a test failed or errored, 2 usage.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	lua "github.com/yuin/gopher-lua"
	luajson "layeh.com/gopher-json"
	"sigs.k8s.io/yaml"
)

// HealthStatus has the JSON shape of gitops-engine's health.HealthStatus.
type HealthStatus struct {
	Status  string `json:"status,omitempty"`
	Message string `json:"message,omitempty"`
}

type testFile struct {
	Tests []struct {
		InputPath    string       `json:"inputPath"`
		HealthStatus HealthStatus `json:"healthStatus"`
	} `json:"tests"`
}

var validStatuses = map[string]bool{
	"Healthy": true, "Progressing": true, "Degraded": true,
	"Suspended": true, "Missing": true, "Unknown": true,
}

type runner struct {
	openLibs bool
	timeout  time.Duration
}

// newState builds the VM the way Argo CD's VM.runLua does.
func (r runner) newState() *lua.LState {
	l := lua.NewState(lua.Options{SkipOpenLibs: !r.openLibs})
	for _, lib := range []struct {
		name string
		fn   lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
		{lua.OsLibName, openSafeOs},
	} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(lib.fn), NRet: 0, Protect: true}, lua.LString(lib.name)); err != nil {
			panic(err)
		}
	}
	l.PreloadModule(lua.OsLibName, safeOsLoader)
	return l
}

// Safe os subset: only os.time and os.date, like Argo CD's oslib_safe.go.
var safeOsFuncs = map[string]lua.LGFunction{"time": osTime, "date": osDate}

func openSafeOs(l *lua.LState) int {
	l.Push(l.RegisterModule(lua.OsLibName, safeOsFuncs))
	return 1
}

func safeOsLoader(l *lua.LState) int {
	l.Push(l.SetFuncs(l.NewTable(), safeOsFuncs))
	return 1
}

func osTime(l *lua.LState) int {
	if l.GetTop() == 0 {
		l.Push(lua.LNumber(time.Now().Unix()))
		return 1
	}
	tbl := l.CheckTable(1)
	field := func(k string, def int) int {
		if n, ok := tbl.RawGetString(k).(lua.LNumber); ok {
			return int(n)
		}
		return def
	}
	t := time.Date(field("year", -1), time.Month(field("month", -1)), field("day", -1),
		field("hour", 12), field("min", 0), field("sec", 0), 0, time.Local)
	l.Push(lua.LNumber(t.Unix()))
	return 1
}

// osDate supports the "*t"/"!*t" table form and a few strftime flags; enough for tests.
func osDate(l *lua.LState) int {
	t := time.Now()
	format := "%c"
	if l.GetTop() >= 1 {
		format = l.CheckString(1)
		if strings.HasPrefix(format, "!") {
			t = t.UTC()
			format = format[1:]
		}
		if l.GetTop() >= 2 {
			t = time.Unix(l.CheckInt64(2), 0)
		}
	}
	if strings.HasPrefix(format, "*t") {
		ret := l.NewTable()
		for k, v := range map[string]int{"year": t.Year(), "month": int(t.Month()), "day": t.Day(),
			"hour": t.Hour(), "min": t.Minute(), "sec": t.Second(), "wday": int(t.Weekday()) + 1, "yday": 0} {
			ret.RawSetString(k, lua.LNumber(v))
		}
		ret.RawSetString("isdst", lua.LFalse)
		l.Push(ret)
		return 1
	}
	layouts := map[byte]string{'Y': "2006", 'm': "01", 'd': "02", 'H': "15", 'M': "04", 'S': "05",
		'c': "02 Jan 06 15:04 MST", 'F': "2006-01-02", 'X': "15:04:05", 'z': "-0700", 'Z': "MST"}
	var b strings.Builder
	for i := 0; i < len(format); i++ {
		if format[i] == '%' && i+1 < len(format) {
			if lay, ok := layouts[format[i+1]]; ok {
				b.WriteString(t.Format(lay))
			} else {
				b.WriteByte(format[i+1])
			}
			i++
			continue
		}
		b.WriteByte(format[i])
	}
	l.Push(lua.LString(b.String()))
	return 1
}

// decodeValue converts decoded JSON into Lua values like Argo CD's util/lua decodeValue.
func decodeValue(l *lua.LState, value any) lua.LValue {
	switch v := value.(type) {
	case bool:
		return lua.LBool(v)
	case float64:
		return lua.LNumber(v)
	case int:
		return lua.LNumber(v)
	case int32:
		return lua.LNumber(v)
	case int64:
		return lua.LNumber(v)
	case json.Number:
		return lua.LString(v)
	case string:
		return lua.LString(v)
	case []any:
		arr := l.CreateTable(len(v), 0)
		for _, item := range v {
			arr.Append(decodeValue(l, item))
		}
		return arr
	case map[string]any:
		tbl := l.CreateTable(0, len(v))
		for k, item := range v {
			tbl.RawSetH(lua.LString(k), decodeValue(l, item))
		}
		return tbl
	}
	return lua.LNil
}

// evaluate runs script against obj and returns the health status, like ExecuteHealthLua.
func (r runner) evaluate(obj map[string]any, script string) (*HealthStatus, error) {
	l := r.newState()
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", decodeValue(l, obj))
	if err := l.DoString(script); err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("script exceeded the %s timeout: %w", r.timeout, err)
		}
		return nil, err
	}
	ret := l.Get(-1)
	if ret.Type() != lua.LTTable {
		return nil, fmt.Errorf("expect table output from Lua script, not %s", ret.Type().String())
	}
	raw, err := luajson.Encode(ret)
	if err != nil {
		return nil, err
	}
	hs := &HealthStatus{}
	if err := json.Unmarshal(raw, hs); err != nil {
		return nil, fmt.Errorf("decoding returned table %s: %w", raw, err)
	}
	if !validStatuses[hs.Status] {
		return &HealthStatus{Status: "Unknown", Message: "Lua returned an invalid health status"}, nil
	}
	return hs, nil
}

func readObject(path string) (map[string]any, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	obj := map[string]any{}
	if err := yaml.Unmarshal(data, &obj); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return obj, nil
}

// runTestFile runs every test of one health_test.yaml; returns (passed, failed).
func (r runner) runTestFile(testPath, scriptPath string) (int, int) {
	dir := filepath.Dir(testPath)
	if scriptPath == "" {
		scriptPath = filepath.Join(dir, "health.lua")
	}
	fail := func(format string, a ...any) (int, int) {
		fmt.Printf("ERROR %s: %s\n", testPath, fmt.Sprintf(format, a...))
		return 0, 1
	}
	script, err := os.ReadFile(scriptPath)
	if err != nil {
		return fail("reading script: %v", err)
	}
	data, err := os.ReadFile(testPath)
	if err != nil {
		return fail("%v", err)
	}
	var tf testFile
	if err := yaml.UnmarshalStrict(data, &tf); err != nil {
		return fail("parsing: %v", err)
	}
	if len(tf.Tests) == 0 {
		return fail("no tests")
	}
	passed, failed := 0, 0
	for _, tc := range tf.Tests {
		name := filepath.ToSlash(filepath.Join(dir, tc.InputPath))
		obj, err := readObject(filepath.Join(dir, tc.InputPath))
		if err != nil {
			fmt.Printf("ERROR %s: %v\n", name, err)
			failed++
			continue
		}
		got, err := r.evaluate(obj, string(script))
		if err != nil {
			fmt.Printf("ERROR %s: %s: %v\n", name, scriptPath, err)
			failed++
			continue
		}
		if *got == tc.HealthStatus {
			fmt.Printf("ok    %s: %s %q\n", name, got.Status, got.Message)
			passed++
			continue
		}
		failed++
		fmt.Printf("FAIL  %s\n", name)
		fmt.Printf("  --- expected (%s)\n  +++ actual   (%s)\n", testPath, scriptPath)
		if got.Status != tc.HealthStatus.Status {
			fmt.Printf("  - status:  %q\n  + status:  %q\n", tc.HealthStatus.Status, got.Status)
		} else {
			fmt.Printf("    status:  %q\n", got.Status)
		}
		if got.Message != tc.HealthStatus.Message {
			fmt.Printf("  - message: %q\n  + message: %q\n", tc.HealthStatus.Message, got.Message)
		} else {
			fmt.Printf("    message: %q\n", got.Message)
		}
	}
	return passed, failed
}

func collect(arg string) ([]string, error) {
	st, err := os.Stat(arg)
	if err != nil {
		return nil, err
	}
	if !st.IsDir() {
		return []string{arg}, nil
	}
	var out []string
	err = filepath.WalkDir(arg, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || d.Name() != "health.lua" {
			return nil
		}
		t := filepath.Join(filepath.Dir(p), "health_test.yaml")
		if _, err := os.Stat(t); err != nil {
			return fmt.Errorf("%s has no sibling health_test.yaml", p)
		}
		out = append(out, t)
		return nil
	})
	if err == nil && len(out) == 0 {
		err = errors.New("no health.lua found")
	}
	sort.Strings(out)
	return out, err
}

func main() {
	openLibs := flag.Bool("open-libs", false, "open all Lua standard libraries (Argo CD's useOpenLibs)")
	timeout := flag.Duration("timeout", time.Second, "per-script timeout (Argo CD uses 1s)")
	scriptPath := flag.String("script", "", "health.lua to use instead of the one next to each health_test.yaml")
	evalObj := flag.String("eval", "", "print the health of this object YAML using the health.lua given as argument")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: %s [flags] health_test.yaml|dir ...\n       %s [flags] -eval obj.yaml health.lua\n", os.Args[0], os.Args[0])
		flag.PrintDefaults()
	}
	flag.Parse()
	r := runner{openLibs: *openLibs, timeout: *timeout}

	if *evalObj != "" {
		if flag.NArg() != 1 {
			flag.Usage()
			os.Exit(2)
		}
		obj, err := readObject(*evalObj)
		if err == nil {
			var script []byte
			if script, err = os.ReadFile(flag.Arg(0)); err == nil {
				var hs *HealthStatus
				if hs, err = r.evaluate(obj, string(script)); err == nil {
					out, _ := json.Marshal(hs)
					fmt.Println(string(out))
					return
				}
			}
		}
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}

	if flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	passed, failed := 0, 0
	for _, arg := range flag.Args() {
		files, err := collect(arg)
		if err != nil {
			fmt.Printf("ERROR %s: %v\n", arg, err)
			failed++
			continue
		}
		for _, f := range files {
			p, fl := r.runTestFile(f, *scriptPath)
			passed += p
			failed += fl
		}
	}
	fmt.Printf("%d passed, %d failed\n", passed, failed)
	if failed > 0 {
		os.Exit(1)
	}
}
