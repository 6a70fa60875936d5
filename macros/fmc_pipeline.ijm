// fmc_pipeline.ijm -- drive the fmc-ij command line from Fiji: register, train, predict and export a folder.
//
// Works in Fiji and plain ImageJ 1, also headless. Arguments (key=value, brackets around values with spaces):
//   fmcij=[/home/me/fmc-ij/.venv/bin/fmc-ij]   the fmc-ij executable (default: fmc-ij on the PATH)
//   data=[/data/pairs]                          a dataset folder (challenge naming, or a manifest from fmc-ij)
//   out=[/out/project]                          gets registered/, run/, predictions/, model.zip
//   preset=care3d  minutes=30  steps=0          training preset, time budget, steps (0: the preset's)
//   pattern=*_angle.tif                         the inputs to predict in data (after training)
// Progress goes to the Log window; a failing step stops the macro with fmc-ij's message.

arg = getArgument();
fmcij = call("ij.Macro.getValue", arg, "fmcij", "fmc-ij");
data = call("ij.Macro.getValue", arg, "data", "");
out = call("ij.Macro.getValue", arg, "out", "");
preset = call("ij.Macro.getValue", arg, "preset", "care3d");
minutes = call("ij.Macro.getValue", arg, "minutes", "30");
steps = call("ij.Macro.getValue", arg, "steps", "0");
pattern = call("ij.Macro.getValue", arg, "pattern", "*_angle.tif");
if (data == "" || out == "") exit("usage: data=[dataset folder] out=[project folder] (fmcij=[...] preset=care3d minutes=30)");
File.makeDirectory(out);
sep = File.separator;

step(1, "register", newArray(fmcij, "register", "--dataset", data, "--out", out + sep + "registered", "--overwrite"),
     out + sep + "registered" + sep + "registration.csv");
train = newArray(fmcij, "train", "--data", out + sep + "registered", "--preset", preset, "--minutes", minutes,
                 "--out", out + sep + "run", "--overwrite");
if (steps != "0") train = Array.concat(train, newArray("--steps", steps));
step(2, "train", train, out + sep + "run" + sep + "model.pt");
step(3, "predict", newArray(fmcij, "predict", "--model", out + sep + "run", data, "--pattern", pattern,
                            "--out", out + sep + "predictions"), out + sep + "predictions");
step(4, "export", newArray(fmcij, "export", out + sep + "run", "--out", out + sep + "model.zip"), out + sep + "model.zip");
showProgress(1);
print("fmc-ij pipeline done: " + out + sep + "model.zip");

function step(k, name, cmd, expected) {
    print("[" + k + "/4] fmc-ij " + name + " ...");
    showProgress(k - 1, 4);
    // One argument per string, no shell: spaces and brackets in paths pass unchanged.
    print(execArray(cmd));
    // exec() returns the output, not the exit status: a step succeeded when its result exists.
    if (!File.exists(expected)) exit("fmc-ij " + name + " failed (no " + expected + "); see the Log window");
}

function execArray(a) {
    // The macro language has no argument splat: dispatch on the array length (exec takes each as one argument).
    n = a.length;
    if (n == 5) return exec(a[0], a[1], a[2], a[3], a[4]);
    if (n == 6) return exec(a[0], a[1], a[2], a[3], a[4], a[5]);
    if (n == 7) return exec(a[0], a[1], a[2], a[3], a[4], a[5], a[6]);
    if (n == 8) return exec(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]);
    if (n == 9) return exec(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8]);
    if (n == 10) return exec(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9]);
    if (n == 11) return exec(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10]);
    if (n == 12) return exec(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10], a[11]);
    if (n == 13) return exec(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10], a[11], a[12]);
    exit("internal: unexpected command length " + n);
}
