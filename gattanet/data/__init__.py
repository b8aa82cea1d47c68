"""Images in: dataset readers (IDX, CIFAR pickles, ImageNet folders), device-resident loaders, batched augmentation, seeded input noise, the decoded-crop cache."""
