"""tsq.torch quickstart: a model class to ternary weights and 2-bit activations, then libtsq."""
import gzip, numpy as np, torch, torch.nn as nn, torch.nn.functional as F, tsq, tsq.torch as tt
def load(split, n, d="/usr/share/datasets/fashion-mnist/%s-%s-idx%d-ubyte.gz"):  # Debian's
    x = np.frombuffer(gzip.open(d % (split, "images", 3)).read(), np.uint8, n * 784, 16)
    y = np.frombuffer(gzip.open(d % (split, "labels", 1)).read(), np.uint8, n, 8)
    return torch.tensor((x / 255 - .29) / .35).float().view(-1, 1, 28, 28), torch.tensor(y).long()
class Net(nn.Module):                                   # a torchvision-style model class
    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32)
        self.conv2, self.bn2 = nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64)
        self.fc1, self.bn3, self.fc2 = nn.Linear(3136, 256), nn.BatchNorm1d(256), nn.Linear(256, 10)
    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        return self.fc2(F.relu(self.bn3(self.fc1(x.flatten(1)))))
def train(model, epochs, lr):                           # your own loop; returns test accuracy
    opt = torch.optim.SGD(model.parameters(), lr, momentum=0.9)
    for i in [i for _ in range(epochs) for i in torch.randperm(len(X)).split(128)]:
        opt.zero_grad(); F.cross_entropy(model.train()(X[i]), Y[i]).backward(); opt.step()
    with torch.no_grad(): return 100 * (model.eval()(Xt).argmax(1) == Yt).float().mean().item()
(X, Y), (Xt, Yt) = load("train", 10000), load("t10k", 2000)
calib = [X[i:i + 256] for i in range(0, 2048, 256)]     # any iterable of batches, or a DataLoader
model = Net(); print("FP32               %.2f%%" % train(model, 3, 0.05))
model = tt.prepare(model, calib); print("step 1 (2-bit A)   %.2f%%" % train(model, 1, 0.01))
model = tt.convert(model, calib); print("step 2 (ternary W) %.2f%%" % train(model, 0, 0))
print("fine-tuned         %.2f%%" % train(model, 1, 0.002))
net = tt.to_tsq(model); net.save_file("quickstart.tsq"); plan = tsq.Plan(net.context, net)
print("integer plan       %.2f%%" % (100 * (plan.run(Xt.numpy()).argmax(1) == Yt.numpy()).mean()))
