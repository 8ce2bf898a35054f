from core.lazy import LazyConfig

model = LazyConfig.load_rel("../common/model.py", "model")
model.hidden_dim = 32
