//! `steptune sweep`: one run per point of a grid of recipe overrides.
//!
//! A point is nothing but the recipe with more `--set` overrides (its grid values and its own
//! output folder), so every point is checked up front exactly like a recipe, and runs through the
//! main job's own stages. The sweep's state is never trusted from a file: it is read back from
//! the point folders (a finished point has its report), so an interrupted sweep, a requeued job,
//! or Slurm array tasks running points side by side all agree on what is left to do.
//! `sweep.json` is a listing for people and for `compare`, rewritten as points progress.
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::json;
use serde_yaml::Value;

use crate::dist;
use crate::recipe::{LoadedRecipe, Override};
use crate::run::write_atomic;
use crate::train::TrainOptions;

/// One `--grid key.path=v1,v2,...`.
#[derive(Debug, Clone, PartialEq)]
pub struct Axis {
    pub key: String,
    /// The values as typed (each YAML), which also name the point folders.
    pub values: Vec<String>,
}

impl Axis {
    pub fn parse(arg: &str) -> Result<Axis> {
        let Some((key, values)) = arg.split_once('=') else {
            bail!("--grid {arg}: expected KEY.PATH=V1,V2,..., for example training.learning_rate=1e-4,2e-4");
        };
        let key = key.trim().to_string();
        if key == "output_dir" {
            bail!("--grid {arg}: output_dir is the sweep folder; every point gets its own folder inside it");
        }
        let values = split_values(values);
        if values.is_empty() || values.iter().any(|v| v.is_empty()) {
            bail!("--grid {arg}: give one or more values separated by commas (a list value in brackets: [q_proj, v_proj])");
        }
        Ok(Axis { key, values })
    }
}

/// Splits on commas outside brackets, braces and quotes, so `[q_proj, v_proj],[q_proj]` is two values.
fn split_values(s: &str) -> Vec<String> {
    let (mut out, mut cur, mut depth, mut quote) = (Vec::new(), String::new(), 0i32, None::<char>);
    for c in s.chars() {
        match (quote, c) {
            (Some(q), _) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '[' | '{') => depth += 1,
            (None, ']' | '}') => depth -= 1,
            (None, ',') if depth == 0 => {
                out.push(cur.trim().to_string());
                cur.clear();
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur.trim().to_string());
    out
}

/// A folder-name-safe form of a value: letters, digits and `.+-_` kept, anything else `_`.
fn safe(v: &str) -> String {
    let mut s = String::new();
    for c in v.chars() {
        let c = if c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '-' | '_') { c } else { '_' };
        if !(c == '_' && s.ends_with('_')) {
            s.push(c);
        }
    }
    let s = s.trim_matches('_').to_string();
    if s.is_empty() || s == "." || s == ".." {
        "_".into()
    } else {
        s
    }
}

/// One point of the grid.
#[derive(Debug, Clone)]
pub struct Point {
    pub index: usize,
    /// Its folder's name, from its values: `learning_rate=1e-4,lora_r=16`.
    pub name: String,
    /// (key, value as typed), in grid order.
    pub settings: Vec<(String, String)>,
    /// The recipe with the user's overrides, the point's values and its output folder.
    pub recipe: LoadedRecipe,
}

impl Point {
    pub fn dir(&self) -> PathBuf {
        self.recipe.output_dir()
    }
}

#[derive(Debug, Clone)]
pub struct Sweep {
    /// The recipe's output_dir: every point's folder and sweep.json are inside it.
    pub root: PathBuf,
    pub recipe_file: Option<PathBuf>,
    pub overrides: Vec<String>,
    pub axes: Vec<Axis>,
    pub points: Vec<Point>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum State {
    Pending,
    /// Has prepared data or checkpoints but no report: resumes where it stopped.
    Started,
    Running,
    Done,
    Failed(String),
}

impl State {
    fn label(&self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Started => "started",
            State::Running => "running",
            State::Done => "done",
            State::Failed(_) => "failed",
        }
    }
}

impl Sweep {
    /// Every point, each loaded and checked as a recipe, before anything runs: a bad value in the
    /// last point stops the sweep before the first trains.
    pub fn plan(recipe: Option<&Path>, overrides: &[String], grid: &[String]) -> Result<Sweep> {
        if grid.is_empty() {
            bail!("a sweep needs at least one --grid KEY.PATH=V1,V2,...");
        }
        let user = Override::parse_all(overrides)?;
        let base = LoadedRecipe::load_or_quickstart(recipe, &user)?;
        let root = base.output_dir();
        let axes: Vec<Axis> = grid.iter().map(|g| Axis::parse(g)).collect::<Result<_>>()?;
        for (i, a) in axes.iter().enumerate() {
            if axes[..i].iter().any(|b| b.key == a.key) {
                bail!("--grid {}: given twice", a.key);
            }
        }
        // The last key segment names a value, or the whole key when two axes share it.
        let labels: Vec<String> = axes
            .iter()
            .map(|a| {
                let last = a.key.rsplit('.').next().unwrap_or(&a.key);
                let shared = axes.iter().filter(|b| b.key.rsplit('.').next() == Some(last)).count() > 1;
                if shared { a.key.clone() } else { last.to_string() }
            })
            .collect();
        let total: usize = axes.iter().map(|a| a.values.len()).product();
        let mut points: Vec<Point> = Vec::with_capacity(total);
        for index in 0..total {
            // The first axis varies slowest, as in nested loops written in --grid order.
            let mut rest = index;
            let mut picks = vec![0; axes.len()];
            for (k, a) in axes.iter().enumerate().rev() {
                picks[k] = rest % a.values.len();
                rest /= a.values.len();
            }
            let settings: Vec<(String, String)> = axes.iter().zip(&picks).map(|(a, &p)| (a.key.clone(), a.values[p].clone())).collect();
            let name = labels.iter().zip(&settings).map(|(l, (_, v))| format!("{}={}", safe(l), safe(v))).collect::<Vec<_>>().join(",");
            if name.len() > 200 {
                bail!("sweep point {index}'s folder name is over 200 bytes ({name}); use shorter values");
            }
            if let Some(other) = points.iter().find(|p| p.name == name) {
                bail!("sweep points {} and {index} would share the folder {name}: make their values differ in letters or digits", other.index);
            }
            let mut all = user.clone();
            for (k, v) in &settings {
                all.push(Override::parse(&format!("{k}={v}")).with_context(|| format!("--grid {k}"))?);
            }
            all.push(Override::new("output_dir", Value::String(root.join(&name).display().to_string())));
            let loaded = LoadedRecipe::load_or_quickstart(recipe, &all).with_context(|| format!("sweep point {index} ({name})"))?;
            points.push(Point { index, name, settings, recipe: loaded });
        }
        Ok(Sweep { root, recipe_file: recipe.map(Path::to_path_buf), overrides: overrides.to_vec(), axes, points })
    }

    /// Whether every point prepares the same data with the same tokenizer (seed, model and data
    /// sections alike), so it is prepared once and shared.
    pub fn shared_prepare(&self) -> bool {
        let key = |p: &Point| serde_json::to_string(&json!({"seed": p.recipe.recipe.seed, "model": p.recipe.recipe.model, "data": p.recipe.recipe.data})).unwrap_or_default();
        let first = key(&self.points[0]);
        self.points.iter().all(|p| key(p) == first)
    }

    /// The state of a point, read from its folder. A folder that holds a run of other settings
    /// is an error, never silently reused or overwritten.
    pub fn state_of(&self, p: &Point) -> Result<State> {
        let dir = p.dir();
        if let Ok(text) = std::fs::read_to_string(dir.join("recipe.yaml")) {
            let now = p.recipe.recipe.to_yaml();
            if text != now {
                let there: Value = serde_yaml::from_str(&text).unwrap_or(Value::Null);
                let here: Value = serde_yaml::from_str(&now).unwrap_or(Value::Null);
                let (a, b) = (flatten(&there), flatten(&here));
                let diffs: Vec<String> = a
                    .keys()
                    .chain(b.keys())
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .filter(|k| a.get(*k) != b.get(*k))
                    .take(4)
                    .map(|k| format!("{k} is {} there and {} now", a.get(k).map(String::as_str).unwrap_or("unset"), b.get(k).map(String::as_str).unwrap_or("unset")))
                    .collect();
                bail!(
                    "{} holds a run of other settings ({}): set another output_dir (--set output_dir=...), or remove that folder to run the point again",
                    dir.display(),
                    diffs.join("; ")
                );
            }
        }
        Ok(if dir.join("report.json").exists() && dir.join("train_result.json").exists() {
            State::Done
        } else if dir.join("prepared").exists() || dir.join("checkpoints").exists() {
            State::Started
        } else {
            State::Pending
        })
    }

    /// The points as a table: index, state, folder, values.
    pub fn listing(&self, states: &[State]) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "{} points in {} (prepared {})", self.points.len(), self.root.display(), if self.shared_prepare() { "once, shared" } else { "per point" });
        for (p, st) in self.points.iter().zip(states) {
            let values: Vec<String> = p.settings.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let _ = writeln!(s, "{:>3}  {:<8} {}  ({})", p.index, st.label(), p.name, values.join(" "));
        }
        s
    }

    pub fn states(&self) -> Result<Vec<State>> {
        self.points.iter().map(|p| self.state_of(p)).collect()
    }

    /// sweep.json: the grid, and each point's folder, values, state and training outcome.
    fn write_index(&self, states: &[State]) -> Result<()> {
        let points: Vec<serde_json::Value> = self
            .points
            .iter()
            .zip(states)
            .map(|(p, st)| {
                let outcome: serde_json::Value = std::fs::read_to_string(p.dir().join("train_result.json")).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or(serde_json::Value::Null);
                let mut v = json!({
                    "index": p.index,
                    "name": p.name,
                    "settings": p.settings.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
                    "state": st.label(),
                    "steps": outcome["steps"],
                    "best_eval_loss": outcome["best_eval_loss"],
                    "final_eval_loss": outcome["final_eval_loss"],
                    "train_seconds": outcome["seconds"],
                });
                if let State::Failed(e) = st {
                    v["error"] = json!(e);
                }
                v
            })
            .collect();
        let index = json!({
            "recipe": self.recipe_file.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "embedded quickstart.yaml".into()),
            "overrides": self.overrides,
            "grid": self.axes.iter().map(|a| json!({"key": a.key, "values": a.values})).collect::<Vec<_>>(),
            "shared_prepare": self.shared_prepare(),
            "points": points,
            "updated_at": humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        });
        write_atomic(&self.root.join("sweep.json"), serde_json::to_string_pretty(&index)?.as_bytes())
    }
}

/// The point a Slurm array task runs (`SLURM_ARRAY_TASK_ID`), checked against the grid's size.
pub fn array_task(n_points: usize) -> Result<Option<usize>> {
    let Some(id) = std::env::var("SLURM_ARRAY_TASK_ID").ok().filter(|v| !v.trim().is_empty()) else { return Ok(None) };
    let i: usize = id.trim().parse().with_context(|| format!("SLURM_ARRAY_TASK_ID={id} is not a whole number"))?;
    if i >= n_points {
        bail!("SLURM_ARRAY_TASK_ID={i} is outside the grid: it has {n_points} points (0-{}); submit with --array=0-{}", n_points - 1, n_points - 1);
    }
    Ok(Some(i))
}

/// Runs the sweep's unfinished points one after another (or only `only`), stopping at the first
/// that fails; finished points are skipped. Returns the points run.
pub fn run(sweep: &Sweep, only: Option<usize>) -> Result<Vec<usize>> {
    let world = dist::world();
    let main = world.is_main();
    // Every rank reads the states before any rank writes into a point folder.
    let mut states = sweep.states()?;
    let todo: Vec<usize> = match only {
        Some(i) => vec![i],
        None => (0..sweep.points.len()).collect(),
    };
    let pending: Vec<usize> = todo.iter().copied().filter(|&i| states[i] != State::Done).collect();
    if main {
        std::fs::create_dir_all(&sweep.root).with_context(|| format!("cannot create the sweep folder {}", sweep.root.display()))?;
        sweep.write_index(&states)?;
        for &i in &todo {
            if states[i] == State::Done {
                eprintln!("sweep: point {i} {} is done; skipped", sweep.points[i].name);
            }
        }
        eprintln!("sweep: {} of {} points to run in {}", pending.len(), sweep.points.len(), sweep.root.display());
    }
    // Prepared once for every point when they share the data settings; an array task prepares
    // its own point, since array tasks run side by side.
    let shared = (only.is_none() && sweep.shared_prepare() && !pending.is_empty()).then(|| sweep.root.join("_prepare"));
    if let Some(dir) = &shared {
        let mut first = sweep.points[pending[0]].recipe.clone();
        first.recipe.output_dir = Some(dir.clone());
        super::prepare_stage(&first, None, 0)?;
    }
    for &i in &pending {
        let p = &sweep.points[i];
        if main {
            eprintln!("sweep: point {i} {} ({})", p.name, if states[i] == State::Started { "resuming" } else { "starting" });
            states[i] = State::Running;
            sweep.write_index(&states)?;
        }
        let result = run_point(p, shared.as_deref());
        states[i] = match &result {
            Ok(()) => State::Done,
            Err(e) => State::Failed(format!("{e:#}")),
        };
        if main {
            sweep.write_index(&states)?;
        }
        result.with_context(|| format!("sweep point {i} ({}) stopped; rerun the same command to resume it", p.name))?;
    }
    Ok(pending)
}

/// One point through the main job's stages; with shared prepared data, the point's folder gets
/// links to it instead of a second preparation.
fn run_point(p: &Point, shared: Option<&Path>) -> Result<()> {
    match shared {
        Some(src) => {
            let world = dist::world();
            let linked = if world.is_main() { link_prepared(src, &p.dir()) } else { Ok(()) };
            world.agree("linking the shared prepared data", linked)?;
        }
        None => super::prepare_stage(&p.recipe, None, 0)?,
    }
    super::train_stage(&p.recipe, None, &TrainOptions::default())?;
    super::eval_stage(&p.recipe, None)
}

/// Hard links (copies across file systems) of what `prepare` wrote; stages replace files by
/// renaming, so a link is never written through.
fn link_prepared(src: &Path, dst: &Path) -> Result<()> {
    for rel in ["prepared", "tokenizer", "prepare_report.md", "prepare_report.json", "run_prepare.json"] {
        link_tree(&src.join(rel), &dst.join(rel))?;
    }
    Ok(())
}

fn link_tree(src: &Path, dst: &Path) -> Result<()> {
    if src.is_dir() {
        std::fs::create_dir_all(dst).with_context(|| format!("cannot create {}", dst.display()))?;
        for e in std::fs::read_dir(src).with_context(|| format!("cannot read {}", src.display()))? {
            let e = e?;
            link_tree(&e.path(), &dst.join(e.file_name()))?;
        }
        return Ok(());
    }
    if !src.exists() {
        return Ok(());
    }
    let _ = std::fs::remove_file(dst);
    if std::fs::hard_link(src, dst).is_err() {
        std::fs::copy(src, dst).with_context(|| format!("cannot copy {} to {}", src.display(), dst.display()))?;
    }
    Ok(())
}

/// A YAML tree as `dotted.key → value` leaves (sequences as one flow value).
pub fn flatten(v: &Value) -> BTreeMap<String, String> {
    fn walk(v: &Value, prefix: &str, out: &mut BTreeMap<String, String>) {
        match v {
            Value::Mapping(m) if !m.is_empty() => {
                for (k, sub) in m {
                    let k = k.as_str().map(str::to_string).unwrap_or_else(|| format!("{k:?}"));
                    walk(sub, &if prefix.is_empty() { k } else { format!("{prefix}.{k}") }, out);
                }
            }
            Value::Null => {
                out.insert(prefix.to_string(), "null".into());
            }
            Value::String(s) => {
                out.insert(prefix.to_string(), s.clone());
            }
            other => {
                let s = serde_json::to_string(other).unwrap_or_default();
                out.insert(prefix.to_string(), s.trim_matches('"').to_string());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(v, "", &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_split_outside_brackets_and_names_are_folder_safe() {
        assert_eq!(split_values("1e-4, 2e-4"), vec!["1e-4", "2e-4"]);
        assert_eq!(split_values("[q_proj, v_proj],[q_proj]"), vec!["[q_proj, v_proj]", "[q_proj]"]);
        assert_eq!(split_values("'a,b',c"), vec!["'a,b'", "c"]);
        assert_eq!(safe("[q_proj, v_proj]"), "q_proj_v_proj");
        assert_eq!(safe("a/b c"), "a_b_c");
        assert_eq!(safe("1e-4"), "1e-4");
        assert_eq!(safe(".."), "_");
        assert!(Axis::parse("output_dir=a,b").is_err());
        assert!(Axis::parse("training.learning_rate").is_err());
    }
}
