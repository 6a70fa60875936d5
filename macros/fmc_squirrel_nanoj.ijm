// fmc_squirrel_nanoj.ijm -- NanoJ-SQUIRREL "Calculate Error-Map, RSE and RSP" on two files.
//
// Needs Fiji with the NanoJ-SQUIRREL update site. Arguments (key=value):
//   reference=[/data/widefield.tif] image=[/data/reconstruction.tif] out=[/out/dir] max=5
// The RSF is estimated by optimisation; max is the largest magnification tried. Writes out/squirrel_results.csv
// (frame, RSP, RSE at full precision) and out/errormap.tif. Headless:
//   ImageJ-linux64 --headless --console -macro fmc_squirrel_nanoj.ijm "reference=[...] image=[...] out=[...]"

arg = getArgument();
ref = call("ij.Macro.getValue", arg, "reference", "");
img = call("ij.Macro.getValue", arg, "image", "");
out = call("ij.Macro.getValue", arg, "out", "");
maxmag = call("ij.Macro.getValue", arg, "max", "5");
if (ref == "" || img == "" || out == "") exit("usage: reference=[wf.tif] image=[sr.tif] out=[folder] max=5");
File.makeDirectory(out);
setBatchMode(true);
open(ref); r = getTitle();
open(img); s = getTitle();
run("Calculate Error-Map, RSE and RSP", "reference=[" + r + "] super-resolution=[" + s + "] rsf=[-- RSF unknown, estimate via optimisation --] max.=" + maxmag);
// Full precision (saveAs("Results") would keep ImageJ's 3 decimals).
t = "RSP and RSE values";
f = File.open(out + File.separator + "squirrel_results.csv");
print(f, "frame,rsp,rse");
for (k = 0; k < Table.size(t); k++)
    print(f, (k + 1) + "," + d2s(Table.get("RSP (Resolution Scaled Pearson-Correlation)", k, t), 9) + "," + d2s(Table.get("RSE (Resolution Scaled Error)", k, t), 9));
File.close(f);
names = getList("image.titles");
for (k = 0; k < names.length; k++) {
    if (endsWith(names[k], "Resolution Scaled Error-Map")) { selectImage(names[k]); saveAs("Tiff", out + File.separator + "errormap.tif"); }
}
print("done " + out);
