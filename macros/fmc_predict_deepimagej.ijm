// fmc_predict_deepimagej.ijm -- run an fmc-ij bioimage.io model with deepImageJ on one image or a folder.
//
// Needs Fiji with deepImageJ 3.1 (update site "DeepImageJ"; builds from 2024-11 on work too). Arguments (key=value):
//   model=[/path/Fiji.app/models/fmc-ij-care3d-nucleus_06122026_130047]  the installed bundle folder (rdf.yaml in
//          it), a folder name under Fiji.app/models, or the bundle's nickname (config.bioimageio.nickname)
//   input=[/data/image_0_nucleus_angle.tif]    a TIFF, or a folder: every *.tif / *.tiff in it
//   output=[/out/dir]                          predictions, named as their inputs (fmc-ij's layout)
//   mode=folder                                folder (default): one deepImageJ run, so one model load, for all
//                                              the images (copied to a staging folder first); file: one run each
//   tensor=restored                            the bundle's output tensor id (fmc-ij bundles: restored)
// Outputs get their input's voxel size back (deepImageJ writes none).
// Install a bundle once with Plugins > DeepImageJ > Install model manually (it unpacks the zip into
// Fiji.app/models/<zip name>_<ddMMYYYY_HHmmss>/), or unzip it into Fiji.app/models/<name>/. Headless:
//   ImageJ-linux64 --headless --console -macro fmc_predict_deepimagej.ijm "model=[...] input=[...] output=[...]"
// deepImageJ names its outputs <getShortTitle()>_<tensor>.tif (the file name without extension and without
// spaces); this macro renames them back to the input names. A bundle with a fixed tile runs on images of at
// least a third of the tile per axis; below that deepImageJ writes nothing and this macro stops saying so.

arg = getArgument();
model = call("ij.Macro.getValue", arg, "model", "");
input = call("ij.Macro.getValue", arg, "input", "");
output = call("ij.Macro.getValue", arg, "output", "");
mode = call("ij.Macro.getValue", arg, "mode", "folder");
tensor = call("ij.Macro.getValue", arg, "tensor", "restored");
if (model == "" || input == "" || output == "") exit("usage: model=[model folder or nickname] input=[file or folder] output=[folder]");
if (endsWith(toLowerCase(model), ".zip")) exit("install " + model + " first: Plugins > DeepImageJ > Install model manually, or unzip it into Fiji.app/models/");
if (mode != "folder" && mode != "file") exit("mode=" + mode + ": use folder or file");
if (!endsWith(output, File.separator)) output = output + File.separator;
File.makeDirectory(output);
files = newArray(0);
if (File.isDirectory(input)) {
    dir = input;
    if (!endsWith(dir, File.separator)) dir = dir + File.separator;
    list = getFileList(dir);
    for (i = 0; i < list.length; i++)
        if (endsWith(toLowerCase(list[i]), ".tif") || endsWith(toLowerCase(list[i]), ".tiff")) files = Array.concat(files, dir + list[i]);
} else {
    files = newArray(input);
}
if (files.length == 0) exit("no TIFF files in " + input);
setBatchMode(true);
// deepImageJ writes its outputs without a voxel size: note each input's (from its first plane) to give it back
cw = newArray(files.length); ch = newArray(files.length); cd = newArray(files.length); cu = newArray(files.length);
for (i = 0; i < files.length; i++) {
    open(files[i], 1);
    getVoxelSize(w, h, d, unit);
    cw[i] = w; ch[i] = h; cd[i] = d; cu[i] = unit;
    close();
}
if (mode == "folder") {
    // deepImageJ runs a folder with one model load, on every entry it holds: stage copies of the inputs only,
    // under names that cannot clash once deepImageJ drops spaces and extensions.
    stage = output + ".fmc-dij-in-" + getTime() + File.separator;
    raw = output + ".fmc-dij-out-" + getTime() + File.separator;
    File.makeDirectory(stage);
    File.makeDirectory(raw);
    staged = newArray(files.length);
    for (i = 0; i < files.length; i++) {
        staged[i] = IJ.pad(i + 1, 4);
        ok = File.copy(files[i], stage + staged[i] + ".tif");
    }
    print("deepImageJ: " + files.length + " image(s), one model load");
    run("DeepImageJ Run", dijOptions(model, stage, raw));
    for (i = 0; i < files.length; i++) {
        name = File.getName(files[i]);
        produced = raw + staged[i] + "_" + tensor + ".tif";
        if (!File.exists(produced)) {
            cleanUp(stage, raw);
            exit("deepImageJ wrote no output for " + name + "; is the image at least a third of the model's tile per axis? See the Log window");
        }
        if (File.exists(output + name)) ok = File.delete(output + name);
        ok = File.rename(produced, output + name);
        recalibrate(output + name, cw[i], ch[i], cd[i], cu[i]);
    }
    cleanUp(stage, raw);
} else {
    for (i = 0; i < files.length; i++) {
        name = File.getName(files[i]);
        print("[" + (i + 1) + "/" + files.length + "] deepImageJ: " + name);
        showProgress(i, files.length);
        run("DeepImageJ Run", dijOptions(model, files[i], output));
        produced = output + shortTitle(name) + "_" + tensor + ".tif";
        if (!File.exists(produced)) exit("deepImageJ wrote no " + produced + "; is the image at least a third of the model's tile per axis? See the Log window");
        if (produced != output + name) {
            if (File.exists(output + name)) ok = File.delete(output + name);
            ok = File.rename(produced, output + name);
        }
        recalibrate(output + name, cw[i], ch[i], cd[i], cu[i]);
    }
}
showProgress(1);
print("done " + files.length + " image(s) -> " + output);

// The keys of deepImageJ 3.1 (model_path), of builds from 2025-06-12 to 2025-07-17 (modelpath) and of builds from
// 2024-11 to 2025-06-12 (modelPath): each build finds its own and ignores the others.
function dijOptions(model, inPath, outPath) {
    o = "";
    spell = newArray("model_path input_path output_folder display_output", "modelpath inputpath outputfolder displayoutput", "modelPath inputPath outputFolder displayOutput");
    for (s = 0; s < spell.length; s++) {
        k = split(spell[s], " ");
        o = o + k[0] + "=[" + model + "] " + k[1] + "=[" + inPath + "] " + k[2] + "=[" + outPath + "] " + k[3] + "=null ";
    }
    return o;
}

// ImageJ's ImagePlus.getShortTitle() for a file name: without its extension and without spaces.
function shortTitle(title) {
    title = String.trim(title);
    dot = lastIndexOf(title, ".");
    if (dot > 0) return replace(substring(title, 0, dot), " ", "");
    space = indexOf(title, " ");
    if (space > -1) return substring(title, 0, space);
    return title;
}

function recalibrate(path, w, h, d, unit) {
    open(path);
    setVoxelSize(w, h, d, unit);
    saveAs("Tiff", path);
    close();
}

function cleanUp(stage, raw) {
    list = getFileList(stage);
    for (i = 0; i < list.length; i++) ok = File.delete(stage + list[i]);
    ok = File.delete(stage);
    list = getFileList(raw);
    for (i = 0; i < list.length; i++) ok = File.delete(raw + list[i]);
    ok = File.delete(raw);
}
