import subprocess
import sys


def test_lang2vec_script_on_sys_path_does_not_shadow_the_package(tmp_path):
    # console scripts put bin/ first on sys.path, where lang2vec installs a lang2vec.py script
    (tmp_path / "lang2vec.py").write_text("raise RuntimeError('the script, not the package')\n")
    code = (f"import sys; sys.path.insert(0, {str(tmp_path)!r}); "
            "from xelm.allocate.typology import language_vectors; "
            "print(language_vectors(['en', 'de']).shape[0])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "2"
