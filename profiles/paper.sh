# The paper's setting, which run.sh runs for every named dataset pair (the scripts' defaults, written out):
# ResNet-50 at 256x128, 150 source epochs, 30 iterations x 70 epochs, BatchNorm over groups of 64 images as the
# authors' 2 GPUs x 64, on any number of GPUs; SSG++ draws its labelled set at iteration 5. Every target alike,
# MSMT17 too: the released SSG has no setting of its own for it (docs/differences.md).
MODEL=(-a resnet50 --height 256 --width 128)
SOURCE=()
ADAPT=(--iteration 30 --epochs 70 --bn-group-size 64)
SEMI=(--label-iteration 5)
