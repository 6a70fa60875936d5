// Register a moving image onto a reference with NanoJ-Core's "Register Channels" (Fiji + NanoJ-Core).
// Argument: reference=[/path/ref.tif] moving=[/path/mov.tif] out=[/out/dir] options=[<Register Channels options>]
// Writes out/registered.tif (the moving image aligned) and out/translation_mask.tif (NanoJ's mask, 2w x h).
arg = getArgument();
function value(key) {
    i = indexOf(arg, key + "=[");
    if (i < 0) exit("missing " + key + "=[...] in the macro argument");
    j = indexOf(arg, "]", i);
    return substring(arg, i + lengthOf(key) + 2, j);
}
ref = value("reference"); mov = value("moving"); out = value("out"); opts = value("options");
setBatchMode(true);
open(ref); r = getTitle();
open(mov); m = getTitle();
// NanoJ expects channels interleaved in one stack: slice 1 = reference, slice 2 = moving.
run("Concatenate...", "  title=pair image1=[" + r + "] image2=[" + m + "]");
run("Register Channels - Estimate", opts);
mask = getList("image.titles");
for (k = 0; k < mask.length; k++) {
    selectImage(mask[k]);
    t = getTitle();
    if (endsWith(t, "TranslationMask")) saveAs("Tiff", out + "/translation_mask.tif");
    if (endsWith(t, "Registered")) { setSlice(2); run("Duplicate...", "title=moved"); saveAs("Tiff", out + "/registered.tif"); }
}
print("done " + out);
