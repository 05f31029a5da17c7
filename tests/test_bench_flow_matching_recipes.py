"""The flow-matching benchmark's per-task recipe: applied to its task only, never under --quick."""

from benchmarks import bench_flow_matching as fm


def test_recipe_overrides_the_defaults_for_its_task_only():
    args = fm.parse_args([])
    tuned = fm.task_args("gaussian_linear", args)
    assert (tuned.learning_rate, tuned.batch_size, tuned.epochs, tuned.hidden_dim) == (3e-4, 512, 150, 32)
    assert tuned.parameter_average_decay == 0.999 and args.hidden_dim == 128
    moons = fm.task_args("two_moons", args)
    assert moons.learning_rate == args.learning_rate == 1e-3
    assert (moons.epochs, moons.parameter_average_decay) == (300, 0.999)
    assert args.parameter_average_decay is None
    assert args.batch_size == 256  # the caller's namespace is not mutated


def test_quick_and_opt_out_keep_the_command_line_settings():
    for argv in (["--quick"], ["--no-task-recipes"]):
        args = fm.parse_args(argv)
        assert fm.task_args("gaussian_linear", args) is args
