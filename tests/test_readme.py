import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_commands():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", readme, flags=re.S)
    install, test = blocks[0].strip(), blocks[1].strip()
    assert install.startswith("pip install") and "pytest" in test
    ci = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert install in ci and test in ci


def test_readme_pictures_exist_and_stay_small():
    readme = (ROOT / "README.md").read_text()
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", readme)
    assert "docs/demo_det.png" in pictures
    for picture in pictures:
        path = ROOT / picture
        assert path.is_file() and path.stat().st_size < 150_000, picture
