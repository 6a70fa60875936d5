// NanoJ-SQUIRREL "Calculate Error-Map, RSE and RSP" on two files, results written to a folder.
// Argument: reference=[/path/wf.tif] image=[/path/sr.tif] out=[/out/dir] max=5
// Writes out/squirrel_results.csv (the "RSP and RSE values" table) and out/errormap.tif.
arg = getArgument();
function value(key, fallback) {
    i = indexOf(arg, key + "=[");
    if (i < 0) {
        i = indexOf(arg, key + "=");
        if (i < 0) return fallback;
        j = indexOf(arg, " ", i);
        if (j < 0) j = lengthOf(arg);
        return substring(arg, i + lengthOf(key) + 1, j);
    }
    j = indexOf(arg, "]", i);
    return substring(arg, i + lengthOf(key) + 2, j);
}
ref = value("reference", ""); img = value("image", ""); out = value("out", ""); maxmag = value("max", "5");
if (ref == "" || img == "" || out == "") exit("usage: reference=[..] image=[..] out=[..] max=5");
setBatchMode(true);
open(ref); r = getTitle();
open(img); s = getTitle();
run("Calculate Error-Map, RSE and RSP", "reference=[" + r + "] super-resolution=[" + s + "] rsf=[-- RSF unknown, estimate via optimisation --] max.=" + maxmag);
// Full precision (saveAs("Results") would keep ImageJ's 3 decimals).
t = "RSP and RSE values";
f = File.open(out + "/squirrel_results.csv");
print(f, "frame,rsp,rse");
for (k = 0; k < Table.size(t); k++)
    print(f, (k + 1) + "," + d2s(Table.get("RSP (Resolution Scaled Pearson-Correlation)", k, t), 9) + "," + d2s(Table.get("RSE (Resolution Scaled Error)", k, t), 9));
File.close(f);
names = getList("image.titles");
for (k = 0; k < names.length; k++) {
    if (endsWith(names[k], "Resolution Scaled Error-Map")) { selectImage(names[k]); saveAs("Tiff", out + "/errormap.tif"); }
}
print("done " + out);
