//! The command line. Every stage is its own subcommand reading the same recipe; a bare recipe
//! argument (or none: the embedded quickstart) runs the main job.
use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

use steptune::data::prepare;
use steptune::recipe::LoadedRecipe;
use steptune::run::RunDir;

#[derive(Parser)]
#[command(name = "steptune", version, about = "Fine-tune open LLMs to turn a user's intent into a numbered step-by-step procedure.")]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Recipe for the main job; without one, the embedded quickstart recipe runs.
    recipe: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// The main job: every stage of the recipe in order.
    Run {
        /// Recipe YAML (default: the embedded quickstart).
        recipe: Option<PathBuf>,
    },
    /// Validate a recipe and print it with every default filled in.
    Check { recipe: PathBuf },
    /// Load, check, clean, split, template and tokenise the data into <run>/prepared/.
    Prepare {
        /// Recipe YAML (default: the embedded quickstart).
        recipe: Option<PathBuf>,
        /// Print the first N train examples token by token with their label mask.
        #[arg(long, default_value_t = 0)]
        show: usize,
        /// Write into this folder instead of the recipe's output_dir.
        #[arg(long)]
        output_dir: Option<PathBuf>,
    },
    /// Print the versions steptune was built with and runs against.
    Version,
}

fn load(recipe: Option<PathBuf>) -> Result<LoadedRecipe> {
    match recipe {
        Some(p) => LoadedRecipe::load(&p),
        None => {
            eprintln!("steptune: no recipe given, running the embedded quickstart recipe");
            Ok(LoadedRecipe::quickstart())
        }
    }
}

fn prepare_stage(recipe: &LoadedRecipe, output_dir: Option<PathBuf>, show: usize) -> Result<()> {
    let run = RunDir::create(output_dir.unwrap_or_else(|| recipe.output_dir()))?;
    run.write_provenance(recipe, "prepare")?;
    let out = prepare::run(recipe, &run)?;
    if show > 0 {
        print!("{}", prepare::show_examples(&out, show));
    }
    eprintln!("prepare: {}", prepare::summary_line(&out.report));
    eprintln!("prepare: wrote {}/prepared/{{train,eval}}.jsonl and prepare_report.md", run.root.display());
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    let result = match (cli.command, cli.recipe) {
        (Some(Command::Check { recipe }), _) => LoadedRecipe::load(&recipe).map(|r| print!("{}", r.recipe.to_yaml())),
        (Some(Command::Prepare { recipe, show, output_dir }), _) => load(recipe).and_then(|r| prepare_stage(&r, output_dir, show)),
        (Some(Command::Version), _) => {
            println!("{}", serde_json::to_string_pretty(&steptune::run::versions()).unwrap_or_default());
            Ok(())
        }
        (Some(Command::Run { recipe }), _) | (None, recipe) => load(recipe).and_then(|r| {
            // The stages this build has, in order; training and evaluation join here as they land.
            prepare_stage(&r, None, 0)
        }),
    };
    if let Err(e) = result {
        eprintln!("steptune: error: {e:#}");
        std::process::exit(1);
    }
}
