"""--python, --path, --env and --prolog apply to local workers as they do on SSH hosts."""

import os
import subprocess
import sys
import textwrap

import dockkit


def probe(_):
    return os.environ.get("DK_VALUE"), os.getcwd(), os.environ.get("DK_PROLOG"), sys.executable


def test_executor_local_options(tmp_path):
    with dockkit.Executor(workers=2, env={"DK_VALUE": "v"}, path=str(tmp_path),
                          prolog="export DK_PROLOG=ran", python=sys.executable) as executor:
        seen = set(executor.map(probe, range(6)))
    assert seen == {("v", str(tmp_path), "ran", sys.executable)}


def test_cli_local_options(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent("""
        import os
        from dockkit import futures
        def f(_):
            return os.environ.get("DK_VALUE"), os.getcwd(), os.environ.get("DK_PROLOG")
        if __name__ == "__main__":
            print(sorted(set(futures.map(f, range(4)))))
    """))
    result = subprocess.run(
        [sys.executable, "-m", "dockkit", "-n", "2", "--env", "DK_VALUE=hello", "--path", str(work),
         "--prolog", "export DK_PROLOG=yes", str(script)],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert f"[('hello', '{work}', 'yes')]" in result.stdout


def test_cli_rejects_a_bad_env_pair(tmp_path):
    script = tmp_path / "job.py"
    script.write_text("print('never')\n")
    result = subprocess.run([sys.executable, "-m", "dockkit", "--env", "NOEQUALS", str(script)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "NOEQUALS" in result.stderr and "K=V" in result.stderr
