"""The zoo generators (netdef.zoo, scripts/gen_*.py, `netdef generate`): every deploy net equals
its published original layer by layer; model_zoo/ holds exactly what they generate."""
import csv
import json
import os
import subprocess
import sys
import time

import pytest
from shared_paths import CORPUS

from netdef import zoo
from netdef.analysis import analyze
from netdef.config import load_net, load_solver, net_from_text
from netdef.net import PHASES, Net

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: (family, variant, original in the corpus)
ORIGINALS = [
    ("resnet", 50, "resnet_50/ResNet-50-deploy.prototxt"),
    ("resnet", 101, "resnet_101/ResNet-101-deploy.prototxt"),
    ("resnet", 152, "resnet_152/ResNet-152-deploy.prototxt"),
    ("vgg", 16, "vgg16/VGG_ILSVRC_16_layers_deploy.prototxt"),
    ("vgg", 19, "vgg19/VGG_ILSVRC_19_layers_deploy.prototxt"),
    ("googlenet", "v1", "bvlc_googlenet/deploy.prototxt"),
    ("squeezenet", "1.0", "squeezenet_v1.0/deploy.prototxt"),
    ("squeezenet", "1.1", "squeezenet_v1.1/deploy.prototxt"),
    ("mobilenet", "1", "mobilenet_v1/mobilenet_deploy.prototxt"),
    ("mobilenet", "2", "mobilenet_v2/mobilenet_v2_deploy.prototxt"),
    ("caffenet", "caffenet", "bvlc_reference_caffenet/deploy.prototxt"),
    ("alexnet", "alexnet", "bvlc_alexnet/deploy.prototxt"),
] + [("densenet", d, f"densenet_{d}/DenseNet_{d}.prototxt") for d in (121, 161, 169, 201)]


def manifest():
    with open(os.path.join(CORPUS, "MANIFEST.tsv"), newline="") as f:
        return {r["file"]: r for r in csv.DictReader(f, delimiter="\t")}


MANIFEST = manifest()


def rows(stats):
    """(name, type, top shapes) per layer, without the Split layers netdef inserts."""
    return [(l.name, l.type, list(l.tops.values())) for l in stats.layers if l.type != "Split"]


def compare(original, generated):
    a, b = rows(original), rows(generated)
    assert [r[1] for r in a] == [r[1] for r in b], "layer type sequence differs"
    for ra, rb in zip(a, b):
        assert ra[2] == rb[2], f"top shapes differ at {ra[0]} / {rb[0]}"
    return [(ra[0], rb[0]) for ra, rb in zip(a, b) if ra[0] != rb[0]]


@pytest.mark.parametrize("family,variant,path", ORIGINALS,
                         ids=[f"{f}-{v}" for f, v, _ in ORIGINALS])
def test_deploy_matches_original(family, variant, path):
    row = MANIFEST[path]
    orig = analyze(Net(load_net(os.path.join(CORPUS, path)), PHASES["TEST"],
                       init_params=False))
    gen = analyze(Net(zoo.build(family, variant), PHASES["TEST"], init_params=False))
    renamed = compare(orig, gen)
    assert renamed == []        # allowed by the issue, but none are needed
    assert gen.learnable_params == int(row["learnable_params(computed)"])
    assert gen.outputs == json.loads(row["outputs(computed shape)"])
    assert gen.stat_params == orig.stat_params
    assert [l.params for l in gen.layers] == [l.params for l in orig.layers]


@pytest.mark.parametrize("depth,params", [(18, 11_689_512), (34, 21_797_672)])
def test_resnet_18_34_match_torchvision(depth, params):
    s = analyze(Net(zoo.build("resnet", depth), PHASES["TEST"], init_params=False))
    assert s.learnable_params == params       # no conv1 bias, as ResNet-101/152
    assert s.outputs == {"prob": [1, 1000]}
    shapes = {l.name: list(l.tops.values())[0] for l in s.layers}
    assert shapes["pool1"] == [1, 64, 56, 56] and shapes["pool5"] == [1, 512, 1, 1]


@pytest.mark.parametrize("family,variant,path", [
    ("googlenet", "v1", "bvlc_googlenet/train_val.prototxt"),
    ("squeezenet", "1.1", "squeezenet_v1.1/train_val.prototxt"),
    ("caffenet", "caffenet", "bvlc_reference_caffenet/train_val.prototxt"),
    ("alexnet", "alexnet", "bvlc_alexnet/train_val.prototxt"),
])
def test_train_val_matches_original(family, variant, path):
    shape = {"googlenet": (50, 3, 224, 224), "squeezenet": (25, 3, 227, 227),
             "caffenet": (50, 3, 227, 227), "alexnet": (50, 3, 227, 227)}[family]
    row = MANIFEST[path]
    orig = analyze(Net(load_net(os.path.join(CORPUS, path)), PHASES["TEST"],
                       input_shapes={"data": shape}, init_params=False))
    gen = analyze(Net(zoo.build(family, variant, deploy=False), PHASES["TEST"],
                      input_shapes={"data": shape}, init_params=False))
    compare(orig, gen)
    assert gen.learnable_params == int(row["learnable_params(computed)"])
    assert gen.outputs == json.loads(row["outputs(computed shape)"])


@pytest.mark.parametrize("folder", sorted(zoo.MODELS))
def test_train_val_both_phases(folder):
    fam, variant = zoo.MODELS[folder]
    net = zoo.build(fam, variant, deploy=False)
    deploy = analyze(Net(zoo.build(fam, variant), PHASES["TEST"], init_params=False))
    crop = 227 if fam in ("squeezenet", "alexnet", "caffenet") else 224
    shapes = {"data": (2, 3, crop, crop), "label": (2,)}
    for phase in ("TRAIN", "TEST"):
        s = analyze(Net(net, PHASES[phase], input_shapes=shapes, init_params=False))
        if fam == "googlenet":   # + the two auxiliary classifiers
            assert s.learnable_params == 13_378_280
        else:
            assert s.learnable_params == deploy.learnable_params
            want = {"loss"} if phase == "TRAIN" else {"loss", "accuracy", "accuracy_top5"}
            if fam in ("alexnet", "caffenet"):        # BVLC's: top-1 accuracy only
                want -= {"accuracy_top5"}
            assert set(s.outputs) == want
    data = [l for l in net.layer if l.type == "Data"]
    assert [d.include[0].phase for d in data] == [PHASES["TRAIN"], PHASES["TEST"]]
    assert data[0].transform_param.mirror and not data[1].transform_param.mirror
    assert data[0].transform_param.crop_size == crop
    bn = [l for l in net.layer if l.type == "BatchNorm"]
    assert all(not l.batch_norm_param.HasField("use_global_stats") for l in bn)


@pytest.mark.parametrize("folder", sorted(zoo.MODELS))
def test_model_zoo_files_are_generated(folder):
    d = os.path.join(REPO, "model_zoo", folder)
    for name, text in zoo.zoo_files(folder).items():
        path = os.path.join(d, name)
        assert os.path.exists(path), f"{path} missing: run scripts/gen_model_zoo.py"
        with open(path) as f:
            assert f.read() == text, f"{path} is stale: run scripts/gen_model_zoo.py"
    s = load_solver(os.path.join(d, "solver.prototxt")).message
    assert s.net == f"model_zoo/{folder}/train_val.prototxt"
    assert s.base_lr > 0 and s.max_iter > 0
    fam, variant = zoo.MODELS[folder]
    assert load_net(os.path.join(d, "deploy.prototxt")).message == zoo.build(fam, variant)


def test_published_solver_settings():
    def solver(folder):
        return load_solver(os.path.join(REPO, "model_zoo", folder, "solver.prototxt")).message
    r = solver("resnet_50")
    assert (r.type, r.base_lr, r.momentum, r.weight_decay, r.lr_policy) == \
        ("SGD", pytest.approx(0.1), pytest.approx(0.9), pytest.approx(1e-4), "step")
    assert r.stepsize == 30 * 5005 and r.max_iter == 90 * 5005
    v = solver("vgg16")
    assert (v.base_lr, v.weight_decay) == (pytest.approx(0.01), pytest.approx(5e-4))
    g = solver("googlenet")
    orig = load_solver(os.path.join(CORPUS, "bvlc_googlenet", "quick_solver.prototxt")).message
    for f in ("base_lr", "lr_policy", "power", "max_iter", "momentum", "weight_decay"):
        assert getattr(g, f) == getattr(orig, f), f
    sq = solver("squeezenet_v1.1")
    orig = load_solver(os.path.join(CORPUS, "squeezenet_v1.1", "solver.prototxt")).message
    for f in ("base_lr", "lr_policy", "power", "max_iter", "momentum", "weight_decay",
              "iter_size", "test_iter"):
        assert getattr(sq, f) == getattr(orig, f), f
    assert solver("densenet_121").type == "Nesterov"
    assert solver("mobilenet_v2").type == "RMSProp"


def test_resnet152_generate_and_build_time():
    t0 = time.perf_counter()
    net = zoo.build("resnet", 152)
    t1 = time.perf_counter()
    stats = analyze(Net(net, PHASES["TEST"], init_params=False))
    t2 = time.perf_counter()
    print(f"\nResNet-152: generate {t1 - t0:.3f} s + build Net {t2 - t1:.3f} s "
          f"= {t2 - t0:.3f} s ({len(net.layer)} layers)")
    assert stats.learnable_params == 60_192_808
    assert t2 - t0 < 5.0


def test_yaml_output_loads():
    text = zoo.net_text("squeezenet", "1.1", fmt="yaml")
    assert net_from_text(text, fmt="yaml").message == zoo.build("squeezenet", "1.1")
    text = zoo.solver_text("resnet", 50, net="x.yaml", snapshot_prefix="s", fmt="yaml")
    assert "base_lr: 0.1" in text


def test_script_writes_file(tmp_path):
    out = tmp_path / "r18.prototxt"
    r = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "gen_resnet.py"),
                        "--depth", "18", "--train-val", "--data", "lmdb/imagenet",
                        "-o", str(out)], capture_output=True, text=True, cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    net = load_net(str(out)).message
    assert net == zoo.build("resnet", 18, deploy=False, data_dir="lmdb/imagenet")
    assert net.layer[0].data_param.source == "lmdb/imagenet/ilsvrc12_train_lmdb"


def test_script_is_netdef_generate():
    """scripts/gen_<family>.py is `netdef generate <family>` under the script's name: the same
    text, the same one-line user error (status 2) and the same options under --help."""
    from click.testing import CliRunner

    from netdef_cli.main import cli

    def script(family, *args):
        return subprocess.run([sys.executable, os.path.join(REPO, "scripts", f"gen_{family}.py"),
                               *args], capture_output=True, text=True)
    r = script("squeezenet", "--version", "1.0", "--solver", "--format", "yaml")
    assert r.returncode == 0, r.stderr
    want = CliRunner().invoke(cli, ["generate", "squeezenet", "--version", "1.0", "--solver",
                                    "--format", "yaml"]).output
    assert r.stdout == want and "base_lr: 0.04" in r.stdout
    r = script("vgg", "--depth", "17")
    assert r.returncode == 2 and r.stderr == "error: vgg: variant must be one of 16, 19, got 17\n"
    r = script("densenet", "-h")
    assert r.returncode == 0 and r.stdout.startswith("Usage: gen_densenet.py [OPTIONS] NAME")
    assert "--train-val" in r.stdout and "--solver" in r.stdout


def test_cli_generate(tmp_path):
    from click.testing import CliRunner

    from netdef_cli.main import cli
    runner = CliRunner()
    out = tmp_path / "sq.yaml"
    r = runner.invoke(cli, ["generate", "squeezenet", "--version", "1.0", "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert load_net(str(out)).message == zoo.build("squeezenet", "1.0")
    r = runner.invoke(cli, ["generate", "resnet50"])
    assert r.exit_code == 0 and 'name: "ResNet-50"' in r.output
    r = runner.invoke(cli, ["generate", "densenet_121", "--solver"])
    assert r.exit_code == 0 and 'type: "Nesterov"' in r.output
    r = runner.invoke(cli, ["generate", "mobilenet", "--version", "3"])
    assert r.exit_code == 2 and "variant must be one of 1, 2" in r.output
    r = runner.invoke(cli, ["generate", "lenet5"])
    assert r.exit_code == 2 and "unknown net" in r.output


@pytest.mark.parametrize("folder,bvlc", [("caffenet", "bvlc_reference_caffenet"),
                                         ("alexnet", "bvlc_alexnet")])
def test_caffenet_alexnet_follow_bvlc_files(folder, bvlc):
    """BVLC's solver settings, and the train_val's fillers and multipliers layer by layer."""
    mine = load_solver(os.path.join(REPO, "model_zoo", folder, "solver.prototxt")).message
    theirs = load_solver(os.path.join(CORPUS, bvlc, "solver.prototxt")).message
    for m in (mine, theirs):
        m.ClearField("net"), m.ClearField("snapshot_prefix")
    assert mine == theirs
    a = load_net(os.path.join(REPO, "model_zoo", folder, "train_val.prototxt")).message
    b = load_net(os.path.join(CORPUS, bvlc, "train_val.prototxt")).message
    learn = lambda net: [(l.name, l.type, list(l.param), l.convolution_param,  # noqa: E731
                          l.inner_product_param, l.lrn_param, l.pooling_param,
                          l.dropout_param) for l in net.layer if l.type != "Data"]
    assert learn(a) == learn(b)
    for da, db in zip([l for l in a.layer if l.type == "Data"],
                      [l for l in b.layer if l.type == "Data"]):
        assert da.data_param.batch_size == db.data_param.batch_size
        assert da.transform_param.crop_size == db.transform_param.crop_size == 227
        assert da.transform_param.mirror == db.transform_param.mirror
        assert list(da.transform_param.mean_value) == [104, 117, 123]   # BVLC's mean pixel
